//! The loss-curve picture written next to checkpoints: training and validation loss
//! against the optimizer step, as an SVG.
//!
//! Plotters is built without its `ttf` feature, so it lays text out with a crude width
//! estimate and the SVG backend emits `<text>` elements that the viewer renders: no
//! system fonts are read, and the picture can be drawn on a headless machine.

use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Error, Result};

const SIZE: (u32, u32) = (960, 600);
const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
const VAL_COLOR: RGBColor = RGBColor(214, 39, 40);

/// Writes an SVG of the training loss (a line) and the validation loss (a line with a
/// marker at each evaluation) against the step, with axis labels, a legend and `title`.
///
/// Points whose loss is NaN or infinite are left out. With no points at all the axes are
/// drawn with a "no data" note. The file is replaced atomically: the picture goes to a
/// temporary file in the same directory, which is then renamed over `path`, so a reader
/// never sees half a file.
pub fn write_loss_curve(
    path: &Path,
    train: &[(usize, f32)],
    val: &[(usize, f32)],
    title: &str,
) -> Result<()> {
    let svg = render(train, val, title).map_err(|e| {
        Error::io(format!("drawing loss curve {}", path.display()), io::Error::other(e.to_string()))
    })?;
    write_atomically(path, svg.as_bytes())
        .map_err(|e| Error::io(format!("writing loss curve {}", path.display()), e))
}

type DrawResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn finite_points(points: &[(usize, f32)]) -> Vec<(f64, f64)> {
    points.iter().filter(|(_, y)| y.is_finite()).map(|&(x, y)| (x as f64, f64::from(y))).collect()
}

/// Axis ranges covering every point, with a little room so that the extremes do not sit
/// on the frame; degenerate (single-value) ranges are widened so plotters can draw ticks.
fn ranges(points: &[(f64, f64)]) -> (Range<f64>, Range<f64>) {
    if points.is_empty() {
        return (0.0..1.0, 0.0..1.0);
    }
    let (mut x0, mut x1, mut y0, mut y1) =
        (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = if y1 > y0 { 0.05 * (y1 - y0) } else { (0.05 * y0.abs()).max(0.5) };
    (x0..x1, (y0 - pad)..(y1 + pad))
}

fn render(train: &[(usize, f32)], val: &[(usize, f32)], title: &str) -> DrawResult<String> {
    let train = finite_points(train);
    let val = finite_points(val);
    let all: Vec<(f64, f64)> = train.iter().chain(&val).copied().collect();
    let (x_range, y_range) = ranges(&all);

    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(x_range.clone(), y_range.clone())?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            // Steps are whole numbers: the f64 axis would print "200.0", and on a short
            // range more ticks than steps would repeat the same label.
            .x_label_formatter(&|x| format!("{x:.0}"))
            .x_labels(((x_range.end - x_range.start) as usize + 1).clamp(2, 10))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()?;

        if !train.is_empty() {
            let style = TRAIN_COLOR.stroke_width(2);
            chart
                .draw_series(LineSeries::new(train.iter().copied(), style))?
                .label("train")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
        if !val.is_empty() {
            let style = VAL_COLOR.stroke_width(2);
            chart
                .draw_series(LineSeries::new(val.iter().copied(), style).point_size(3))?
                .label("validation")
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (24, 0)], style)
                        + Circle::new((12, 0), 3, style)
                });
        }
        if all.is_empty() {
            let centre = ((x_range.start + x_range.end) / 2.0, (y_range.start + y_range.end) / 2.0);
            let font = ("sans-serif", 20)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Center));
            chart.plotting_area().draw(&Text::new("no data", centre, font))?;
        } else {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .draw()?;
        }
        root.present()?;
    }
    Ok(buf)
}

/// Distinguishes temporary files of concurrent writers within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to a temporary file next to `path` and renames it over `path` (a rename
/// within one directory is atomic). The temporary file is removed on failure.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{}.{}.{n}.tmp", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        // Flushed to disk before the rename, so a crash leaves the old file or the new
        // one, never an empty one under the final name.
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Best effort: the file may never have been created.
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_both_series_with_a_legend() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.svg");
        let train: Vec<(usize, f32)> =
            (0..200).map(|s| (s, 5.0 * (-(s as f32) / 80.0).exp() + 1.0)).collect();
        let mut train_with_gaps = train.clone();
        train_with_gaps[10].1 = f32::NAN;
        train_with_gaps[20].1 = f32::INFINITY;
        let val = vec![(0, 6.1), (100, 2.5), (199, 1.6)];
        write_loss_curve(&path, &train_with_gaps, &val, "tiny <shakespeare>").unwrap();
        let svg = fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg"), "{}", &svg[..svg.len().min(200)]);
        for label in ["train", "validation", "step", "loss", "&lt;shakespeare&gt;"] {
            assert!(svg.contains(label), "missing {label}");
        }
        assert!(svg.contains("<text"));
        assert!(svg.contains("<circle"), "validation markers");
        assert!(!svg.contains("NaN") && !svg.contains("inf"));

        // Overwriting leaves no temporary files behind.
        write_loss_curve(&path, &train, &[], "again").unwrap();
        let names: Vec<_> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("loss.svg")]);
        let svg = fs::read_to_string(&path).unwrap();
        assert!(svg.contains("again") && svg.contains("train") && !svg.contains("validation"));
    }

    #[test]
    fn empty_and_degenerate_inputs_still_draw() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.svg");
        write_loss_curve(&path, &[], &[], "nothing yet").unwrap();
        let svg = fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg") && svg.contains("no data"));

        write_loss_curve(&path, &[(0, f32::NAN)], &[(5, 2.0)], "one point").unwrap();
        assert!(fs::read_to_string(&path).unwrap().contains("validation"));
        write_loss_curve(&path, &[(3, 1.0), (3, 1.0)], &[], "flat").unwrap();
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("loss.svg");
        let e = write_loss_curve(&path, &[(0, 1.0)], &[], "t").unwrap_err();
        assert!(matches!(e, Error::Io { .. }));
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }
}
