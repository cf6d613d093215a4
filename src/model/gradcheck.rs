//! Gradient checks of layers against finite differences: `ops::gradcheck` over every
//! parameter a layer registered in its store.

use candle_core::{Result, Tensor};

use super::params::ParamStore;

/// [`crate::ops::gradcheck::check_gradients`] with the parameters of `store`.
pub fn check_gradients(
    label: &str,
    shape: &[usize],
    store: &ParamStore,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<()> {
    let params: Vec<_> = store
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.var.clone()))
        .collect();
    crate::ops::gradcheck::check_gradients(label, shape, store.device(), &params, f)
}

/// A network path: input → output.
pub type Path<'a> = dyn Fn(&Tensor) -> Result<Tensor> + 'a;

/// A fused path against its reference, run on twin stores built alike: `fused` and
/// `reference` each map the input to an output. Outputs, every parameter's gradient, the
/// input's gradient (present exactly when `x` is tracked) and the running statistics must be
/// equal, not close — the same code on the same numbers.
pub fn assert_same_step(
    label: &str,
    x: &candle_core::Var,
    track_input: bool,
    (fused_store, fused): (&ParamStore, &Path),
    (reference_store, reference): (&ParamStore, &Path),
) -> Result<()> {
    let values = |t: &Tensor| -> Result<Vec<f64>> {
        t.to_dtype(candle_core::DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()
    };
    let input = if track_input {
        x.as_tensor().clone()
    } else {
        x.as_tensor().detach()
    };
    let (yf, yr) = (fused(&input)?, reference(&input)?);
    assert_eq!(values(&yf)?, values(&yr)?, "{label}: forward");
    let r = Tensor::rand(-1f64, 1.0, yf.shape(), yf.device())?.to_dtype(yf.dtype())?;
    let gf = (&yf * &r)?.sum_all()?.backward()?;
    let gr = (&yr * &r)?.sum_all()?.backward()?;
    for (a, b) in fused_store.params().iter().zip(reference_store.params()) {
        let (ga, gb) = (gf.get(a.var.as_tensor()), gr.get(b.var.as_tensor()));
        let (ga, gb) = (ga.expect("fused gradient"), gb.expect("reference gradient"));
        assert_eq!(values(ga)?, values(gb)?, "{label}: gradient of {}", a.name);
    }
    match (gf.get(x.as_tensor()), gr.get(x.as_tensor())) {
        (Some(a), Some(b)) => {
            assert!(track_input);
            assert_eq!(values(a)?, values(b)?, "{label}: input gradient");
        }
        (None, None) => assert!(!track_input, "{label}: no input gradient"),
        _ => panic!("{label}: an input gradient on one side only"),
    }
    for ((name, a), (_, b)) in fused_store.buffers().iter().zip(reference_store.buffers()) {
        assert_eq!(
            values(a.as_tensor())?,
            values(b.as_tensor())?,
            "{label}: running {name}"
        );
    }
    Ok(())
}
