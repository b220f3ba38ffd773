use anemone::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (program, weights) = read_model_dir("my_model")?; // model.mil and its weight files
    let device = Device::auto()?; // the ANE if present, else the simulator
    let mut model = device.compile(&program, &weights)?; // weights snapshotted here, like the ANE
    model.input("x")?.write_f32(&[0.5; 64 * 32])?; // converts to the declared dtype
    model.evaluate()?;
    let y = model.output("y")?.read_f32()?;
    println!("y[0] = {}", y[0]);

    // Or in one call, by name: shapes are checked, outputs come back in their own dtype.
    let x = npy::read("x.npy")?; // any float or integer .npy numpy writes
    let outputs = model.predict(&[("x", &x)])?;
    npy::write("y.npy", &outputs["y"])?;
    Ok(())
}
