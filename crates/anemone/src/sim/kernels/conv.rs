//! Convolution (cross-correlation, as MIL's conv): x `[N, Cin, *spatial]`, weight
//! `[Cout, Cin / groups, *kernel]`, 1 to 3 spatial dims, strides, dilations, explicit padding
//! before and after each spatial dim (the caller resolves MIL's pad_type), groups, optional bias.
//!
//! Four paths, all accumulating in f32:
//! - pointwise (1x1, stride 1, no padding): one GEMM per image and group straight on the
//!   `[Cin, H*W]` layout, `out[Cout, HW] = W[Cout, Cin] x X[Cin, HW]`, no copy (the GEMM widens
//!   fp16 input while it packs);
//! - depthwise (one input channel per group): a direct loop over taps, vectorized along rows;
//! - stride 1 in one or two spatial dims, with a weight packed ahead and at least 16 output
//!   channels per group, on a CPU with AVX-512: the direct kernel of [`super::conv_direct`]
//!   on the input padded a chunk of rows at a time, output channels along the vector lanes,
//!   with the bits of the im2col GEMM below;
//! - everything else: one GEMM per image and group on the im2col matrix
//!   `[Cin/g * k, out spatial]`, which is never built: the GEMM packs its B panels straight
//!   from the input ([`gemm::Im2col`]), each thread its own, so no scratch matrix is written
//!   and read back. The sums are those of a GEMM on the built matrix, bit for bit (a test
//!   keeps the building path as the reference).
//!
//! The GEMM paths finish each output tile as it leaves the kernel (output port, bias, the
//! rounding to the output type). Weights that are constant can be packed once ahead
//! ([`pack_weight`]) and passed to [`conv_packed`].
//!
//! fp16 output follows the ANE's output port: NaN -> +0, and when a convolution accumulates two
//! or more taps (Cin/groups * kernel size >= 2) a value rounding to 2^15 or more is ±inf (a
//! single-tap conv keeps the full fp16 range, as measured). A bias is added in fp16 after the
//! accumulator output is rounded, so there are two roundings when a bias is present.

use super::conv_direct;
use super::gemm::{self, Epilogue, Operand, PackedMatrix, Port, Side, View};
use super::{Element, KernelError, Result, Scratch, check_len, parallel_worth_it};
use crate::sim::numerics;
use rayon::prelude::*;

const KERNEL: &str = "conv";

/// Geometry of a convolution, per spatial dim (all vectors have the spatial rank).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvParams {
    /// Step between neighbouring windows, per spatial dim (>= 1).
    pub strides: Vec<usize>,
    /// Spacing between the taps of the kernel, per spatial dim (1 = dense).
    pub dilations: Vec<usize>,
    /// Zeros added before the input, per spatial dim.
    pub pad_before: Vec<usize>,
    /// Zeros added after the input, per spatial dim.
    pub pad_after: Vec<usize>,
    /// Channel groups: input and output channels split into this many independent convs (both
    /// channel counts must be multiples of it; `Cin` for a depthwise conv).
    pub groups: usize,
}

impl ConvParams {
    /// Stride 1, dilation 1, no padding, one group, for `spatial_rank` spatial dims.
    pub fn new(spatial_rank: usize) -> Self {
        ConvParams {
            strides: vec![1; spatial_rank],
            dilations: vec![1; spatial_rank],
            pad_before: vec![0; spatial_rank],
            pad_after: vec![0; spatial_rank],
            groups: 1,
        }
    }
}

/// A convolution's shapes with the spatial dims padded to three (leading unit dims).
#[derive(Debug, Clone)]
struct Geometry {
    n: usize,
    cin: usize,
    cout: usize,
    groups: usize,
    input: [usize; 3],
    kernel: [usize; 3],
    output: [usize; 3],
    stride: [usize; 3],
    dilation: [usize; 3],
    pad: [usize; 3],
    out_shape: Vec<usize>,
}

impl Geometry {
    fn new(x_shape: &[usize], w_shape: &[usize], p: &ConvParams) -> Result<Self> {
        let err = |m: String| KernelError::new(KERNEL, m);
        let sr = x_shape.len().wrapping_sub(2);
        if x_shape.len() < 3 || x_shape.len() > 5 {
            return Err(err(format!("input {x_shape:?} must be [N, C, 1 to 3 spatial dims]")));
        }
        if w_shape.len() != x_shape.len() {
            return Err(err(format!("weight {w_shape:?} does not match input {x_shape:?}")));
        }
        for (name, v) in [
            ("strides", &p.strides),
            ("dilations", &p.dilations),
            ("pad_before", &p.pad_before),
            ("pad_after", &p.pad_after),
        ] {
            if v.len() != sr {
                return Err(err(format!("{name} {v:?} for {sr} spatial dims")));
            }
        }
        let (n, cin, cout, g) = (x_shape[0], x_shape[1], w_shape[0], p.groups);
        if g == 0 || cin % g != 0 || cout % g != 0 || w_shape[1] * g != cin {
            return Err(err(format!(
                "groups {g}: input channels {cin}, weight {w_shape:?} do not fit"
            )));
        }
        if p.strides.contains(&0) || p.dilations.contains(&0) {
            return Err(err("strides and dilations must be >= 1".into()));
        }
        let lead = 3 - sr;
        let mut geo = Geometry {
            n,
            cin,
            cout,
            groups: g,
            input: [1; 3],
            kernel: [1; 3],
            output: [1; 3],
            stride: [1; 3],
            dilation: [1; 3],
            pad: [0; 3],
            out_shape: vec![n, cout],
        };
        for i in 0..sr {
            let d = lead + i;
            geo.input[d] = x_shape[2 + i];
            geo.kernel[d] = w_shape[2 + i];
            geo.stride[d] = p.strides[i];
            geo.dilation[d] = p.dilations[i];
            geo.pad[d] = p.pad_before[i];
            let (Some(span), Some(padded)) = (
                geo.kernel[d].saturating_sub(1).checked_mul(geo.dilation[d]).map(|s| s + 1),
                geo.input[d]
                    .checked_add(p.pad_before[i])
                    .and_then(|v| v.checked_add(p.pad_after[i])),
            ) else {
                return Err(err(format!("spatial dim {i}: kernel or padding too large")));
            };
            if geo.kernel[d] == 0 || padded < span {
                return Err(err(format!(
                    "spatial dim {i}: kernel {} (dilation {}) does not fit input {} padded to {padded}",
                    geo.kernel[d], geo.dilation[d], geo.input[d]
                )));
            }
            geo.output[d] = (padded - span) / geo.stride[d] + 1;
            geo.out_shape.push(geo.output[d]);
        }
        Ok(geo)
    }

    fn in_spatial(&self) -> usize {
        self.input.iter().product()
    }
    fn out_spatial(&self) -> usize {
        self.output.iter().product()
    }
    fn taps(&self) -> usize {
        self.kernel.iter().product()
    }
    fn cin_g(&self) -> usize {
        self.cin / self.groups
    }
    fn cout_g(&self) -> usize {
        self.cout / self.groups
    }
    fn pointwise(&self) -> bool {
        self.kernel == [1; 3]
            && self.stride == [1; 3]
            && self.pad == [0; 3]
            && self.input == self.output
    }

    /// For tap offset `k` along dim `d`: the range of output positions whose input position
    /// `o * stride + k * dilation - pad` lies inside the input, and that input position for
    /// the first of them.
    fn valid(&self, d: usize, k: usize) -> (usize, usize) {
        let shift = (k * self.dilation[d]) as isize - self.pad[d] as isize;
        let s = self.stride[d] as isize;
        let n_in = self.input[d] as isize;
        // Smallest o with o * s + shift >= 0, largest with o * s + shift < n_in.
        let lo = if shift >= 0 { 0 } else { ((-shift) + s - 1) / s };
        let hi = if n_in - shift <= 0 {
            0
        } else {
            ((n_in - shift - 1) / s + 1).min(self.output[d] as isize)
        };
        (lo as usize, (hi.max(lo)) as usize)
    }
}

/// Output shape of a convolution.
pub fn conv_output_shape(
    x_shape: &[usize],
    w_shape: &[usize],
    params: &ConvParams,
) -> Result<Vec<usize>> {
    Ok(Geometry::new(x_shape, w_shape, params)?.out_shape)
}

/// `out = conv(x, weight) + bias`; see the module doc. Types may differ, e.g. fp16 activations
/// with weights (and bias) the plan widened to f32 once.
#[allow(clippy::too_many_arguments)]
pub fn conv<X: Element, W: Element, O: Element>(
    x: &[X],
    x_shape: &[usize],
    weight: &[W],
    w_shape: &[usize],
    bias: Option<&[W]>,
    params: &ConvParams,
    out: &mut [O],
    scratch: &mut Scratch,
) -> Result<()> {
    check_len(KERNEL, "weight", weight.len(), w_shape)?;
    let bias32: Option<Vec<f32>> = bias.map(|b| {
        b.iter()
            .map(|v| if W::ANE_RULES { numerics::ane_read(v.to_f32()) } else { v.to_f32() })
            .collect()
    });
    conv_with(x, x_shape, Weights::Values(weight), w_shape, bias32.as_deref(), params, out, scratch)
}

/// [`conv`] with the weight packed ahead by [`pack_weight`] and an f32 bias (read as given).
pub fn conv_packed<X: Element, O: Element>(
    x: &[X],
    x_shape: &[usize],
    weight: &PackedConvWeight,
    bias: Option<&[f32]>,
    params: &ConvParams,
    out: &mut [O],
    scratch: &mut Scratch,
) -> Result<()> {
    if weight.groups != params.groups {
        return Err(KernelError::new(
            KERNEL,
            format!("weight packed for {} groups used with {}", weight.groups, params.groups),
        ));
    }
    let shape = weight.shape.clone();
    conv_with::<X, f32, O>(x, x_shape, Weights::Packed(weight), &shape, bias, params, out, scratch)
}

/// A constant convolution weight packed once for the GEMM: one packed `[Cout/g, Cin/g * taps]`
/// matrix per group, plus the weights widened to f32 when a depthwise conv may read them
/// directly (one input channel per group), plus each group's weight in output-channel lanes
/// when a stride-1 convolution of one or two spatial dims may run on the direct kernel.
#[derive(Clone, Debug)]
pub struct PackedConvWeight {
    shape: Vec<usize>,
    groups: usize,
    matrices: Vec<PackedMatrix>,
    depthwise: Option<Vec<f32>>,
    lanes: Option<Vec<Vec<f32>>>,
}

impl PackedConvWeight {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.matrices.iter().map(PackedMatrix::bytes).sum::<usize>()
            + self.depthwise.as_ref().map_or(0, |d| d.len() * 4)
            + self.lanes.iter().flatten().map(|l| l.len() * 4).sum::<usize>()
    }
}

/// Packs a constant weight `[Cout, Cin/groups, *kernel]` for [`conv_packed`] with `params`
/// (its groups; with unit strides it is also laid out for the direct kernel, where that
/// runs). fp16 values are widened exactly, NaN read as +inf (the ANE's rule, as for a weight
/// read at run time).
pub fn pack_weight<W: Element>(
    weight: &[W],
    w_shape: &[usize],
    params: &ConvParams,
) -> Result<PackedConvWeight> {
    let groups = params.groups;
    check_len(KERNEL, "weight", weight.len(), w_shape)?;
    if w_shape.len() < 3 || groups == 0 || !w_shape[0].is_multiple_of(groups) {
        return Err(KernelError::new(
            KERNEL,
            format!("weight {w_shape:?} with {groups} groups cannot be packed"),
        ));
    }
    let cout_g = w_shape[0] / groups;
    let ktot: usize = w_shape[1..].iter().product();
    let data = gemm::elems(weight)?;
    let matrices = (0..groups)
        .map(|g| {
            let view =
                View { data, offset: g * cout_g * ktot, row_stride: ktot as isize, col_stride: 1 };
            PackedMatrix::pack(Side::Lhs, cout_g, ktot, view)
        })
        .collect::<Result<Vec<_>>>()?;
    let widened = || {
        let mut w = vec![0.0; weight.len()];
        super::load_ane(weight, &mut w);
        w
    };
    let depthwise = (w_shape[1] == 1).then(widened);
    let taps: usize = w_shape[2..].iter().product();
    let unit_strides = params.strides.iter().all(|&s| s == 1);
    let direct = w_shape.len() <= 4 && w_shape[1] >= 2 && taps >= 2 && unit_strides;
    let lanes = (direct && conv_direct::wants_weight(cout_g)).then(|| {
        let w = widened();
        (0..groups)
            .map(|g| {
                conv_direct::lay_out_weight(cout_g, ktot, |o, p| w[(g * cout_g + o) * ktot + p])
            })
            .collect()
    });
    Ok(PackedConvWeight { shape: w_shape.to_vec(), groups, matrices, depthwise, lanes })
}

/// The weight as a kernel gets it.
enum Weights<'a, W> {
    Values(&'a [W]),
    Packed(&'a PackedConvWeight),
}

#[allow(clippy::too_many_arguments)]
fn conv_with<X: Element, W: Element, O: Element>(
    x: &[X],
    x_shape: &[usize],
    weight: Weights<'_, W>,
    w_shape: &[usize],
    bias: Option<&[f32]>,
    params: &ConvParams,
    out: &mut [O],
    scratch: &mut Scratch,
) -> Result<()> {
    let geo = Geometry::new(x_shape, w_shape, params)?;
    check_len(KERNEL, "input", x.len(), x_shape)?;
    check_len(KERNEL, "output", out.len(), &geo.out_shape)?;
    if let Some(b) = bias {
        check_len(KERNEL, "bias", b.len(), &[geo.cout])?;
    }
    let multi_tap = geo.cin_g() * geo.taps() >= 2;
    if geo.pointwise() || geo.cin_g() != 1 {
        let port = match (O::ANE_RULES, multi_tap) {
            (false, _) => Port::Ieee,
            (true, true) => Port::AneSaturate,
            (true, false) => Port::AneResult,
        };
        let weight = match &weight {
            Weights::Values(w) => GemmWeight::Values(gemm::elems(w)?),
            Weights::Packed(p) => GemmWeight::Packed(p),
        };
        let x = gemm::elems(x)?;
        if geo.pointwise() {
            pointwise(&geo, x, &weight, bias, port, out)?;
        } else if let (GemmWeight::Packed(p), Some(shape)) = (&weight, direct_shape(&geo))
            && let Some(lanes) = &p.lanes
        {
            direct(&geo, &shape, x, lanes, bias, port, out)?;
        } else {
            implicit_gemm(&geo, x, &weight, bias, port, out)?;
        }
        return Ok(());
    }
    // Depthwise: a direct loop in f32, then the port.
    let w_len = match weight {
        Weights::Values(w) if W::as_f32(w).is_none() => w.len(),
        _ => 0,
    };
    let (sa, sb, sc, _) = scratch.buffers(
        if X::as_f32(x).is_some() { 0 } else { x.len() },
        w_len,
        if O::as_f32(out).is_some() { 0 } else { out.len() },
        0,
    );
    let x32 = super::matmul::widen(x, sa);
    let w32: &[f32] = match weight {
        Weights::Values(w) => super::matmul::widen(w, sb),
        Weights::Packed(p) => p
            .depthwise
            .as_deref()
            .ok_or_else(|| KernelError::new(KERNEL, "packed weight has no depthwise copy"))?,
    };
    let acc: &mut [f32] = match O::as_f32_mut(out) {
        Some(o) => o,
        None => sc,
    };
    depthwise(&geo, x32, w32, acc);
    finish::<O>(&geo, acc, bias);
    if O::as_f32(out).is_none() {
        O::store(&scratch.buffers(0, 0, out.len(), 0).2[..], out);
    }
    Ok(())
}

/// The weight of one GEMM path: elements, or packed per group.
enum GemmWeight<'a> {
    Values(gemm::Elems<'a>),
    Packed(&'a PackedConvWeight),
}

impl GemmWeight<'_> {
    /// The `[Cout/g, ktot]` matrix of group `g`.
    fn group(&self, g: usize, cout_g: usize, ktot: usize) -> Operand<'_> {
        match self {
            GemmWeight::Values(data) => Operand::View(View {
                data: *data,
                offset: g * cout_g * ktot,
                row_stride: ktot as isize,
                col_stride: 1,
            }),
            GemmWeight::Packed(p) => Operand::Packed(p.matrices[g].panels()),
        }
    }
}

/// Output port and bias of the depthwise path, in place on the f32 accumulator.
fn finish<O: Element>(geo: &Geometry, acc: &mut [f32], bias: Option<&[f32]>) {
    let p = geo.out_spatial();
    let multi_tap = geo.cin_g() * geo.taps() >= 2;
    for (row, v) in acc.chunks_mut(p).enumerate() {
        let co = row % geo.cout;
        if O::ANE_RULES {
            if multi_tap {
                numerics::mac_saturate_slice(v);
            } else {
                numerics::ane_result_slice(v);
            }
            if let Some(b) = bias {
                for x in v.iter_mut() {
                    *x = numerics::ane_result(numerics::round_f16(*x) + b[co]);
                }
            }
        } else if let Some(b) = bias {
            for x in v.iter_mut() {
                *x += b[co];
            }
        }
    }
}

/// 1x1, stride 1, unpadded: a GEMM per image and group on the input as it lies.
fn pointwise<O: Element>(
    geo: &Geometry,
    x: gemm::Elems<'_>,
    w: &GemmWeight<'_>,
    bias: Option<&[f32]>,
    port: Port,
    out: &mut [O],
) -> Result<()> {
    let (p, cin_g, cout_g) = (geo.in_spatial(), geo.cin_g(), geo.cout_g());
    for n in 0..geo.n {
        for g in 0..geo.groups {
            let dst_off = (n * geo.cout + g * cout_g) * p;
            let x_view = View {
                data: x,
                offset: (n * geo.cin + g * cin_g) * p,
                row_stride: p as isize,
                col_stride: 1,
            };
            gemm::gemm(
                cout_g,
                p,
                cin_g,
                w.group(g, cout_g, cin_g),
                Operand::View(x_view),
                gemm::out(&mut out[dst_off..dst_off + cout_g * p])?,
                p,
                Epilogue::row_bias(port, bias.map(|b| &b[g * cout_g..])),
                true,
            )?;
        }
    }
    Ok(())
}

/// Adds `wv * x[tap-shifted]` over one output channel plane, or (im2col) copies the
/// tap-shifted input plane into `dst` when `wv` is None. Positions outside the input are
/// skipped (they stay as they were: 0 for a fresh im2col row, the partial sum otherwise).
#[inline]
fn tap_plane(geo: &Geometry, plane: &[f32], tap: [usize; 3], wv: Option<f32>, dst: &mut [f32]) {
    let [_, oh_n, ow_n] = geo.output;
    let [ih_n, iw_n] = [geo.input[1], geo.input[2]];
    let (d_lo, d_hi) = geo.valid(0, tap[0]);
    let (h_lo, h_hi) = geo.valid(1, tap[1]);
    let (w_lo, w_hi) = geo.valid(2, tap[2]);
    if w_lo >= w_hi {
        return;
    }
    let sw = geo.stride[2];
    let id0 = |o: usize| o * geo.stride[0] + tap[0] * geo.dilation[0] - geo.pad[0];
    let ih0 = |o: usize| o * geo.stride[1] + tap[1] * geo.dilation[1] - geo.pad[1];
    let iw_first = w_lo * sw + tap[2] * geo.dilation[2] - geo.pad[2];
    for od in d_lo..d_hi {
        for oh in h_lo..h_hi {
            let src_row = (id0(od) * ih_n + ih0(oh)) * iw_n;
            let dst_row = (od * oh_n + oh) * ow_n;
            let out = &mut dst[dst_row + w_lo..dst_row + w_hi];
            let n = out.len();
            match (wv, sw) {
                (None, 1) => {
                    out.copy_from_slice(&plane[src_row + iw_first..src_row + iw_first + n])
                }
                (None, _) => {
                    for (j, o) in out.iter_mut().enumerate() {
                        *o = plane[src_row + iw_first + j * sw];
                    }
                }
                (Some(w), 1) => {
                    let src = &plane[src_row + iw_first..src_row + iw_first + n];
                    for (o, s) in out.iter_mut().zip(src) {
                        *o += w * s;
                    }
                }
                (Some(w), _) => {
                    for (j, o) in out.iter_mut().enumerate() {
                        *o += w * plane[src_row + iw_first + j * sw];
                    }
                }
            }
        }
    }
}

/// One input channel per group: direct accumulation, tap by tap.
fn depthwise(geo: &Geometry, x: &[f32], w: &[f32], acc: &mut [f32]) {
    let (p_in, p_out, taps, cout_g) =
        (geo.in_spatial(), geo.out_spatial(), geo.taps(), geo.cout_g());
    let [_, kh, kw] = geo.kernel;
    let channel = |row: usize, dst: &mut [f32]| {
        let (n, co) = (row / geo.cout, row % geo.cout);
        let ci = co / cout_g;
        let plane = &x[(n * geo.cin + ci) * p_in..(n * geo.cin + ci + 1) * p_in];
        dst.fill(0.0);
        for t in 0..taps {
            let tap = [t / (kh * kw), (t / kw) % kh, t % kw];
            tap_plane(geo, plane, tap, Some(w[co * taps + t]), dst);
        }
    };
    if parallel_worth_it(acc.len() * taps / 4) {
        acc.par_chunks_mut(p_out).enumerate().for_each(|(row, dst)| channel(row, dst));
    } else {
        for (row, dst) in acc.chunks_mut(p_out).enumerate() {
            channel(row, dst);
        }
    }
}

/// How [`conv_direct`] sees each image and group of a convolution, when it runs it: stride 1,
/// one or two spatial dims, and what [`conv_direct::admits`] asks.
fn direct_shape(geo: &Geometry) -> Option<conv_direct::Shape> {
    let flat = geo.input[0] == 1 && geo.kernel[0] == 1 && geo.output[0] == 1 && geo.pad[0] == 0;
    let shape = conv_direct::Shape {
        channels: geo.cin_g(),
        outputs: geo.cout_g(),
        input: [geo.input[1], geo.input[2]],
        output: [geo.output[1], geo.output[2]],
        kernel: [geo.kernel[1], geo.kernel[2]],
        dilation: [geo.dilation[1], geo.dilation[2]],
        pad: [geo.pad[1], geo.pad[2]],
    };
    (geo.stride == [1; 3] && flat && conv_direct::admits(&shape)).then_some(shape)
}

/// The direct kernel per image and group, with `lanes` the packed weight's lanes per group.
fn direct<O: Element>(
    geo: &Geometry,
    shape: &conv_direct::Shape,
    x: gemm::Elems<'_>,
    lanes: &[Vec<f32>],
    bias: Option<&[f32]>,
    port: Port,
    out: &mut [O],
) -> Result<()> {
    let (p_in, p_out) = (geo.in_spatial(), geo.out_spatial());
    let (cin_g, cout_g) = (geo.cin_g(), geo.cout_g());
    for n in 0..geo.n {
        for (g, lanes) in lanes.iter().enumerate().take(geo.groups) {
            let first = (n * geo.cin + g * cin_g) * p_in;
            let dst = (n * geo.cout + g * cout_g) * p_out;
            conv_direct::conv(
                shape,
                x,
                (first, p_in),
                lanes,
                bias.map(|b| &b[g * cout_g..(g + 1) * cout_g]),
                port,
                &mut out[dst..dst + cout_g * p_out],
            )?;
        }
    }
    Ok(())
}

/// A GEMM per image and group on the im2col matrix of the input, packed by the GEMM from the
/// input itself.
fn implicit_gemm<O: Element>(
    geo: &Geometry,
    x: gemm::Elems<'_>,
    w: &GemmWeight<'_>,
    bias: Option<&[f32]>,
    port: Port,
    out: &mut [O],
) -> Result<()> {
    let (p_in, p_out) = (geo.in_spatial(), geo.out_spatial());
    let (cin_g, cout_g) = (geo.cin_g(), geo.cout_g());
    let ktot = cin_g * geo.taps();
    for n in 0..geo.n {
        for g in 0..geo.groups {
            let cols = gemm::Im2col {
                data: x,
                offset: (n * geo.cin + g * cin_g) * p_in,
                channel_stride: p_in,
                channels: cin_g,
                input: geo.input,
                kernel: geo.kernel,
                output: geo.output,
                stride: geo.stride,
                dilation: geo.dilation,
                pad: geo.pad,
            };
            let dst_off = (n * geo.cout + g * cout_g) * p_out;
            gemm::gemm(
                cout_g,
                p_out,
                ktot,
                w.group(g, cout_g, ktot),
                Operand::Im2col(&cols),
                gemm::out(&mut out[dst_off..dst_off + cout_g * p_out])?,
                p_out,
                Epilogue::row_bias(port, bias.map(|b| &b[g * cout_g..])),
                true,
            )?;
        }
    }
    Ok(())
}

/// im2col of each image and group into `col`, then one GEMM: the reference the tests hold
/// [`implicit_gemm`] to, bit for bit.
#[cfg(test)]
fn im2col_gemm<O: Element>(
    geo: &Geometry,
    x: &[f32],
    w: &GemmWeight<'_>,
    bias: Option<&[f32]>,
    port: Port,
    out: &mut [O],
    col: &mut [f32],
) -> Result<()> {
    let (p_in, p_out, taps) = (geo.in_spatial(), geo.out_spatial(), geo.taps());
    let (cin_g, cout_g) = (geo.cin_g(), geo.cout_g());
    let ktot = cin_g * taps;
    let [_, kh, kw] = geo.kernel;
    for n in 0..geo.n {
        for g in 0..geo.groups {
            let fill = |r: usize, row: &mut [f32]| {
                let (c, t) = (r / taps, r % taps);
                let ci = g * cin_g + c;
                let plane = &x[(n * geo.cin + ci) * p_in..(n * geo.cin + ci + 1) * p_in];
                row.fill(0.0);
                tap_plane(geo, plane, [t / (kh * kw), (t / kw) % kh, t % kw], None, row);
            };
            if parallel_worth_it(col.len()) {
                col.par_chunks_mut(p_out).enumerate().for_each(|(r, row)| fill(r, row));
            } else {
                for (r, row) in col.chunks_mut(p_out).enumerate() {
                    fill(r, row);
                }
            }
            let dst_off = (n * geo.cout + g * cout_g) * p_out;
            let col_view = View {
                data: gemm::Elems::F32(col),
                offset: 0,
                row_stride: p_out as isize,
                col_stride: 1,
            };
            gemm::gemm(
                cout_g,
                p_out,
                ktot,
                w.group(g, cout_g, ktot),
                Operand::View(col_view),
                gemm::out(&mut out[dst_off..dst_off + cout_g * p_out])?,
                p_out,
                Epilogue::row_bias(port, bias.map(|b| &b[g * cout_g..])),
                true,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::kernels::numel;
    use crate::sim::kernels::testutil::*;
    use crate::sim::numerics::ulp_f16;
    use half::f16;

    /// Direct f64 convolution by definition.
    fn reference(
        x: &[f64],
        x_shape: &[usize],
        w: &[f64],
        w_shape: &[usize],
        bias: Option<&[f64]>,
        p: &ConvParams,
    ) -> Vec<f64> {
        let geo = Geometry::new(x_shape, w_shape, p).unwrap();
        let [id, ih, iw] = geo.input;
        let [kd, kh, kw] = geo.kernel;
        let [od, oh, ow] = geo.output;
        let mut out = Vec::new();
        for n in 0..geo.n {
            for co in 0..geo.cout {
                let g = co / geo.cout_g();
                for (a, b, c) in
                    (0..od).flat_map(|a| (0..oh).flat_map(move |b| (0..ow).map(move |c| (a, b, c))))
                {
                    let mut s = bias.map_or(0.0, |b| b[co]);
                    for ci in 0..geo.cin_g() {
                        for (u, v, t) in (0..kd).flat_map(|u| {
                            (0..kh).flat_map(move |v| (0..kw).map(move |t| (u, v, t)))
                        }) {
                            let pos = |o: usize, k: usize, d: usize| {
                                (o * geo.stride[d] + k * geo.dilation[d]) as isize
                                    - geo.pad[d] as isize
                            };
                            let (zd, zh, zw) = (pos(a, u, 0), pos(b, v, 1), pos(c, t, 2));
                            if zd < 0
                                || zh < 0
                                || zw < 0
                                || zd >= id as isize
                                || zh >= ih as isize
                                || zw >= iw as isize
                            {
                                continue;
                            }
                            let cin = g * geo.cin_g() + ci;
                            let xi = (((n * geo.cin + cin) * id + zd as usize) * ih + zh as usize)
                                * iw
                                + zw as usize;
                            let wi = ((co * geo.cin_g() + ci) * kd + u) * kh * kw + v * kw + t;
                            s += x[xi] * w[wi];
                        }
                    }
                    out.push(s);
                }
            }
        }
        out
    }

    fn check(x_shape: &[usize], w_shape: &[usize], p: &ConvParams, with_bias: bool) {
        let x = values_f16(numel(x_shape), 21);
        let w = values_f16(numel(w_shape), 22);
        let b = values_f16(w_shape[0], 23);
        let bias64 = to_f64(&b);
        let want = reference(
            &to_f64(&x),
            x_shape,
            &to_f64(&w),
            w_shape,
            with_bias.then_some(&bias64[..]),
            p,
        );
        let shape = conv_output_shape(x_shape, w_shape, p).unwrap();
        let mut out = vec![f16::ZERO; numel(&shape)];
        let mut s = Scratch::new();
        conv(&x, x_shape, &w, w_shape, with_bias.then_some(&b[..]), p, &mut out, &mut s).unwrap();
        let k = (numel(w_shape) / w_shape[0]) as f64;
        let what = format!("{x_shape:?} {w_shape:?} {p:?} bias {with_bias}");
        // f32 accumulation errs by <= k^2 2^-24 (|x|, |w| < 1), the output rounding by half an
        // ulp (1 allowed); with a bias, the accumulator output is rounded first, which adds
        // half an ulp of the value before the bias.
        let before_bias = reference(&to_f64(&x), x_shape, &to_f64(&w), w_shape, None, p);
        for (i, (g, r)) in out.iter().zip(&want).enumerate() {
            let pre = if with_bias { 0.5 * ulp_f16(before_bias[i] as f32) as f64 } else { 0.0 };
            let tol = ulp_f16(*r as f32) as f64 + pre + k * k * 2f64.powi(-24);
            assert!((g.to_f64() - r).abs() <= tol, "{what}[{i}]: {g} vs {r}");
        }
        // f32 in, f32 out: IEEE reference path.
        let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
        let w32: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        let b32: Vec<f32> = b.iter().map(|v| v.to_f32()).collect();
        let mut out32 = vec![0.0f32; out.len()];
        conv(&x32, x_shape, &w32, w_shape, with_bias.then_some(&b32[..]), p, &mut out32, &mut s)
            .unwrap();
        for (g, r) in out32.iter().zip(&want) {
            assert!((*g as f64 - r).abs() <= k * k * 2f64.powi(-24) + 1e-6, "{what}: {g} vs {r}");
        }
    }

    fn params(
        sr: usize,
        stride: usize,
        dil: usize,
        pb: usize,
        pa: usize,
        groups: usize,
    ) -> ConvParams {
        ConvParams {
            strides: vec![stride; sr],
            dilations: vec![dil; sr],
            pad_before: vec![pb; sr],
            pad_after: vec![pa; sr],
            groups,
        }
    }

    /// 2-D with these strides, dilation 2 along the width, and padding on one side per dim.
    fn asymmetric(strides: Vec<usize>) -> ConvParams {
        ConvParams {
            strides,
            dilations: vec![1, 2],
            pad_before: vec![0, 2],
            pad_after: vec![1, 0],
            groups: 1,
        }
    }

    /// Whether two outputs hold the same bits, element for element.
    fn same_bits<T: Element>(got: &[T], want: &[T]) -> bool {
        got.len() == want.len()
            && got.iter().zip(want).all(|(g, w)| g.to_f32().to_bits() == w.to_f32().to_bits())
    }

    #[test]
    fn pointwise_goes_straight_to_gemm() {
        check(&[1, 17, 1, 33], &[3, 17, 1, 1], &ConvParams::new(2), false);
        check(&[2, 8, 5, 7], &[6, 4, 1, 1], &params(2, 1, 1, 0, 0, 2), true);
        check(&[1, 3, 16], &[5, 3, 1], &ConvParams::new(1), true);
    }

    #[test]
    fn general_2d_with_stride_padding_dilation_groups() {
        check(&[1, 3, 9, 11], &[4, 3, 3, 3], &ConvParams::new(2), false);
        check(&[2, 4, 9, 11], &[6, 4, 3, 3], &params(2, 1, 1, 1, 1, 1), true);
        check(&[1, 4, 17, 13], &[4, 2, 3, 2], &params(2, 2, 1, 1, 0, 2), true);
        check(&[1, 3, 17, 17], &[2, 3, 3, 3], &params(2, 1, 2, 2, 1, 1), false);
        check(&[1, 2, 8, 8], &[3, 2, 1, 1], &params(2, 2, 1, 0, 0, 1), false);
        check(&[1, 3, 10, 13], &[2, 3, 3, 2], &asymmetric(vec![2, 3]), true);
    }

    #[test]
    fn depthwise() {
        check(&[1, 8, 9, 10], &[8, 1, 3, 3], &params(2, 1, 1, 1, 1, 8), true);
        check(&[2, 4, 9, 10], &[8, 1, 3, 3], &params(2, 2, 2, 2, 0, 4), false);
        check(&[1, 3, 33], &[3, 1, 5], &params(1, 1, 1, 2, 2, 3), false);
    }

    #[test]
    fn one_and_three_spatial_dims() {
        check(&[2, 3, 17], &[4, 3, 3], &params(1, 2, 1, 1, 1, 1), true);
        check(&[1, 2, 5, 6, 7], &[3, 2, 2, 3, 3], &params(3, 1, 1, 1, 0, 1), true);
    }

    #[test]
    fn bigger_case_uses_threads() {
        check(&[1, 16, 40, 40], &[16, 16, 3, 3], &params(2, 1, 1, 1, 1, 1), false);
        check(&[1, 64, 40, 40], &[64, 1, 3, 3], &params(2, 1, 1, 1, 1, 64), false);
    }

    #[test]
    fn saturation_depends_on_taps() {
        let mut s = Scratch::new();
        let mut out = [f16::ZERO; 1];
        // Single tap: the full fp16 range.
        let x = [f16::from_f32(60000.0)];
        conv(&x, &[1, 1, 1], &[f16::ONE], &[1, 1, 1], None, &ConvParams::new(1), &mut out, &mut s)
            .unwrap();
        assert_eq!(out[0].to_f32(), 60000.0);
        // Two channels: the accumulator port saturates at 2^15.
        let x = [f16::from_f32(20000.0), f16::from_f32(20000.0)];
        let w = [f16::ONE, f16::ONE];
        conv(&x, &[1, 2, 1], &w, &[1, 2, 1], None, &ConvParams::new(1), &mut out, &mut s).unwrap();
        assert_eq!(out[0], f16::INFINITY);
    }

    #[test]
    fn bias_is_added_after_rounding() {
        let mut s = Scratch::new();
        let mut out = [f16::ZERO; 1];
        // 2049 rounds to 2048 at the port; + 1 = 2049 rounds (ties to even) to 2048 again, where
        // a single rounding of 2050 would keep 2050.
        let x = [f16::from_f32(1024.0), f16::from_f32(1025.0)];
        let w = [f16::ONE, f16::ONE];
        let b = [f16::ONE];
        conv(&x, &[1, 2, 1], &w, &[1, 2, 1], Some(&b), &ConvParams::new(1), &mut out, &mut s)
            .unwrap();
        assert_eq!(out[0].to_f32(), 2048.0);
    }

    #[test]
    fn packed_weights_give_the_same_bits() {
        let cases: [(&[usize], &[usize], ConvParams); 5] = [
            (&[2, 40, 3, 9], &[30, 40, 1, 1], ConvParams::new(2)),
            (&[1, 8, 5, 7], &[6, 4, 1, 1], params(2, 1, 1, 0, 0, 2)),
            (&[1, 6, 9, 11], &[14, 6, 3, 3], params(2, 1, 1, 1, 1, 1)),
            (&[1, 4, 17, 13], &[4, 2, 3, 2], params(2, 2, 1, 1, 0, 2)),
            (&[1, 8, 9, 10], &[8, 1, 3, 3], params(2, 1, 1, 1, 1, 8)),
        ];
        for (x_shape, w_shape, p) in cases {
            let x = values_f16(numel(x_shape), 31);
            let mut w = values_f16(numel(w_shape), 32);
            // A NaN weight is read as +inf either way.
            w[3] = f16::NAN;
            let b = values_f16(w_shape[0], 33);
            let b32: Vec<f32> = b.iter().map(|v| v.to_f32()).collect();
            let shape = conv_output_shape(x_shape, w_shape, &p).unwrap();
            let mut s = Scratch::new();
            let packed = pack_weight(&w, w_shape, &p).unwrap();
            for with_bias in [false, true] {
                let mut want = vec![f16::ZERO; numel(&shape)];
                let bias = with_bias.then_some(&b[..]);
                conv(&x, x_shape, &w, w_shape, bias, &p, &mut want, &mut s).unwrap();
                let mut got = vec![f16::ZERO; want.len()];
                let bias = with_bias.then_some(&b32[..]);
                conv_packed(&x, x_shape, &packed, bias, &p, &mut got, &mut s).unwrap();
                assert!(same_bits(&got, &want), "{x_shape:?} {w_shape:?} bias {with_bias}");
            }
        }
        // Packed for other groups: an error, not a wrong result.
        let w = values_f16(6 * 4, 1);
        let packed = pack_weight(&w, &[6, 4, 1, 1], &ConvParams::new(2)).unwrap();
        let mut out = vec![f16::ZERO; 6 * 4];
        let x = values_f16(8 * 4, 2);
        let p = params(2, 1, 1, 0, 0, 2);
        let mut s = Scratch::new();
        assert!(conv_packed(&x, &[1, 8, 2, 2], &packed, None, &p, &mut out, &mut s).is_err());
        assert!(pack_weight(&w, &[6, 4, 1, 1], &params(2, 1, 1, 0, 0, 4)).is_err());
    }

    /// The GEMM that packs its panels from the input gives the bits of the GEMM on the built
    /// im2col matrix, fp16 and f32, through several blocks of K and columns and across threads.
    #[test]
    fn implicit_im2col_gives_the_bits_of_the_built_matrix() {
        let cases: [(&[usize], &[usize], ConvParams); 8] = [
            (&[1, 40, 37, 41], &[24, 40, 3, 3], params(2, 1, 1, 1, 1, 1)),
            (&[2, 6, 15, 17], &[4, 6, 3, 3], params(2, 2, 1, 1, 1, 1)),
            (&[1, 4, 17, 13], &[6, 2, 3, 2], params(2, 1, 2, 2, 1, 2)),
            (&[1, 3, 10, 13], &[5, 3, 3, 2], asymmetric(vec![2, 3])),
            (&[1, 5, 40, 3], &[7, 5, 3, 3], params(2, 1, 1, 2, 0, 1)),
            (&[1, 3, 300], &[4, 3, 7], params(1, 1, 1, 3, 3, 1)),
            (&[1, 2, 5, 6, 7], &[3, 2, 2, 3, 3], params(3, 1, 1, 1, 0, 1)),
            (&[1, 16, 9, 11], &[8, 16, 5, 5], params(2, 3, 1, 0, 4, 1)),
        ];
        for (x_shape, w_shape, p) in cases {
            let geo = Geometry::new(x_shape, w_shape, &p).unwrap();
            let mut x = values_f16(numel(x_shape), 41);
            // A NaN input is read as +inf either way.
            x[7] = f16::NAN;
            let w = values_f16(numel(w_shape), 42);
            let b: Vec<f32> = values(w_shape[0], 43);
            let x32: Vec<f32> = x.iter().map(|v| numerics::ane_read(v.to_f32())).collect();
            let w32: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
            let n_out = numel(&geo.out_shape);
            let mut col = vec![0.0; geo.cin_g() * geo.taps() * geo.out_spatial()];
            let what = format!("{x_shape:?} {w_shape:?} {p:?}");
            for bias in [None, Some(&b[..])] {
                // fp16 input and weight, fp16 output through the accumulator port.
                let weight = GemmWeight::Values(gemm::elems(&w).unwrap());
                let port = Port::AneSaturate;
                let mut want = vec![f16::ZERO; n_out];
                im2col_gemm(&geo, &x32, &weight, bias, port, &mut want, &mut col).unwrap();
                let mut got = vec![f16::ZERO; n_out];
                let xe = gemm::elems(&x).unwrap();
                implicit_gemm(&geo, xe, &weight, bias, port, &mut got).unwrap();
                assert!(same_bits(&got, &want), "fp16 {what} bias {}", bias.is_some());
                // f32 throughout, IEEE.
                let weight = GemmWeight::Values(gemm::elems(&w32).unwrap());
                let mut want = vec![0.0f32; n_out];
                im2col_gemm(&geo, &x32, &weight, bias, Port::Ieee, &mut want, &mut col).unwrap();
                let mut got = vec![0.0f32; n_out];
                let xe = gemm::elems(&x32).unwrap();
                implicit_gemm(&geo, xe, &weight, bias, Port::Ieee, &mut got).unwrap();
                assert!(same_bits(&got, &want), "f32 {what} bias {}", bias.is_some());
            }
        }
    }

    /// Stride-1 convolutions with a packed weight run on the direct kernel (where the CPU has
    /// it) and give the bits of the GEMM on the built im2col matrix: fp16 through the
    /// accumulator port and f32, partial channel blocks, rows narrower than a tile,
    /// padding on either side, dilation, groups, several images, one spatial dim, NaN inputs
    /// and weights, and sums that saturate.
    #[test]
    fn direct_kernel_gives_the_bits_of_the_built_matrix() {
        let cases: [(&[usize], &[usize], ConvParams); 7] = [
            (&[1, 40, 37, 41], &[24, 40, 3, 3], params(2, 1, 1, 1, 1, 1)),
            (&[2, 6, 15, 17], &[40, 6, 3, 3], params(2, 1, 2, 2, 2, 1)),
            (&[1, 4, 17, 13], &[70, 2, 3, 2], params(2, 1, 2, 2, 1, 2)),
            (&[1, 3, 10, 13], &[17, 3, 3, 2], asymmetric(vec![1, 1])),
            (&[1, 5, 6, 3], &[33, 5, 3, 3], params(2, 1, 1, 2, 0, 1)),
            (&[1, 3, 300], &[20, 3, 7], params(1, 1, 1, 3, 3, 1)),
            (&[1, 64, 20, 28], &[64, 64, 3, 3], params(2, 1, 1, 1, 1, 1)),
        ];
        for (x_shape, w_shape, p) in cases {
            let geo = Geometry::new(x_shape, w_shape, &p).unwrap();
            let what = format!("{x_shape:?} {w_shape:?} {p:?}");
            assert!(direct_shape(&geo).is_some() || !conv_direct::available(), "{what}");
            let mut x = values_f16(numel(x_shape), 51);
            x[7] = f16::NAN;
            // Large values where the first sums are taken: some saturate to ±inf.
            for v in x.iter_mut().take(40) {
                *v = f16::from_f32(v.to_f32() * 3000.0);
            }
            let mut w = values_f16(numel(w_shape), 52);
            w[5] = f16::NAN;
            let b: Vec<f32> = values(w_shape[0], 53);
            let x32: Vec<f32> = x.iter().map(|v| numerics::ane_read(v.to_f32())).collect();
            let w32: Vec<f32> = w.iter().map(|v| numerics::ane_read(v.to_f32())).collect();
            let packed = pack_weight(&w, w_shape, &p).unwrap();
            assert_eq!(packed.lanes.is_some(), conv_direct::available(), "{what}");
            let n_out = numel(&geo.out_shape);
            let mut col = vec![0.0; geo.cin_g() * geo.taps() * geo.out_spatial()];
            let mut s = Scratch::new();
            for bias in [None, Some(&b[..])] {
                let weight = GemmWeight::Values(gemm::elems(&w32).unwrap());
                let mut want = vec![f16::ZERO; n_out];
                im2col_gemm(&geo, &x32, &weight, bias, Port::AneSaturate, &mut want, &mut col)
                    .unwrap();
                let mut got = vec![f16::ZERO; n_out];
                conv_packed(&x, x_shape, &packed, bias, &p, &mut got, &mut s).unwrap();
                assert!(same_bits(&got, &want), "fp16 {what} bias {}", bias.is_some());
                assert!(want.iter().any(|v| v.is_infinite()), "{what}: nothing saturated");
                // f32 throughout, IEEE.
                let mut want = vec![0.0f32; n_out];
                im2col_gemm(&geo, &x32, &weight, bias, Port::Ieee, &mut want, &mut col).unwrap();
                let packed32 = pack_weight(&w32, w_shape, &p).unwrap();
                let mut got = vec![0.0f32; n_out];
                conv_packed(&x32, x_shape, &packed32, bias, &p, &mut got, &mut s).unwrap();
                assert!(same_bits(&got, &want), "f32 {what} bias {}", bias.is_some());
            }
        }
    }

    /// The direct kernel is left to the GEMM where it would waste lanes (fewer than 16 output
    /// channels per group) or could not share rows between threads (a large 1-D conv), and
    /// its weight is not laid out for strides it does not take.
    #[test]
    fn direct_kernel_only_where_it_pays() {
        let shape = |x: &[usize], w: &[usize], p: &ConvParams| {
            direct_shape(&Geometry::new(x, w, p).unwrap()).is_some()
        };
        let on = conv_direct::available();
        assert_eq!(shape(&[1, 64, 56, 56], &[64, 64, 3, 3], &params(2, 1, 1, 1, 1, 1)), on);
        assert!(!shape(&[1, 64, 56, 56], &[8, 64, 3, 3], &params(2, 1, 1, 1, 1, 1)));
        assert!(!shape(&[1, 64, 56, 56], &[64, 64, 3, 3], &params(2, 2, 1, 1, 1, 1)));
        let long = shape(&[1, 256, 100_000], &[256, 256, 3], &params(1, 1, 1, 1, 1, 1));
        assert_eq!(long, on && rayon::current_num_threads() < 2);
        let w = values_f16(64 * 64 * 9, 1);
        let strided = pack_weight(&w, &[64, 64, 3, 3], &params(2, 2, 1, 1, 1, 1)).unwrap();
        assert!(strided.lanes.is_none());
        let few = pack_weight(&w[..8 * 64 * 9], &[8, 64, 3, 3], &params(2, 1, 1, 1, 1, 1)).unwrap();
        assert!(few.lanes.is_none());
    }

    /// Sizes whose products do not fit in a usize are errors, on every path, never a wrapped
    /// length that lets a kernel read or write past its buffers.
    #[test]
    fn overflowing_sizes_are_errors() {
        let e = 67_280_421_310_721usize;
        let p = ConvParams {
            strides: vec![1, 1],
            dilations: vec![1, e],
            pad_before: vec![0, 0],
            pad_after: vec![274_176, 2 * e - 1],
            groups: 1,
        };
        let (x_shape, w_shape) = ([1, 2, 1, 1], [1, 2, 1, 2]);
        let x = [1.0f32; 2];
        let w = [1.0f32; 4];
        let mut out = [0.0f32; 1];
        let mut s = Scratch::new();
        assert!(conv(&x, &x_shape, &w, &w_shape, None, &p, &mut out, &mut s).is_err());
        let packed = pack_weight(&w, &w_shape, &p).unwrap();
        assert!(conv_packed(&x, &x_shape, &packed, None, &p, &mut out, &mut s).is_err());
        let huge = ConvParams { pad_after: vec![usize::MAX, 0], ..p };
        assert!(conv_output_shape(&x_shape, &w_shape, &huge).is_err());
    }

    #[test]
    fn shape_errors() {
        let p = ConvParams::new(2);
        assert!(conv_output_shape(&[1, 4, 5, 5], &[2, 3, 3, 3], &p).is_err());
        assert!(conv_output_shape(&[1, 4, 2, 5], &[2, 4, 3, 3], &p).is_err());
        assert!(conv_output_shape(&[1, 4, 5], &[2, 4, 3, 3], &p).is_err());
        assert_eq!(conv_output_shape(&[1, 4, 5, 6], &[2, 4, 3, 3], &p).unwrap(), vec![1, 2, 3, 4]);
    }
}
