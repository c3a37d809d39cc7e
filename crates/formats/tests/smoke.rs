use fp8_formats::*;

#[test]
fn quantize_smoke() {
    let mut v = vec![1.0f32, 3.3, -500.0, 0.0001, f32::NAN, 2.0];
    let spec = QuantSpec { cast: CastSpec::new(Format::FLOAT8_E4M3FN), scaling: Scaling::None };
    let s = quantize(&mut v, &[2, 3], &spec);
    assert_eq!(v[0], 1.0);
    assert_eq!(v[1], 3.25);
    assert!(v[2].is_nan());
    assert_eq!(s.count, 6);
    assert_eq!(s.amax, 500.0);
    let mut w: Vec<f32> = (0..300_000).map(|i| (i as f32 * 0.37).sin() * 1000.0).collect();
    let st = quantize(&mut w, &[300, 1000], &QuantSpec { cast: CastSpec::new(Format::FLOAT8_E4M3FN), scaling: Scaling::Tensor(TensorScale::Current { pow2: false }) });
    assert!(st.snr_db > 25.0 && st.snr_db < 40.0, "{st:?}");
    for sc in [Scaling::Row { pow2: true }, Scaling::Col { pow2: false }, Scaling::MX, Scaling::Block { rows: 128, cols: 128, pow2: false }, Scaling::Nvfp4 { axis: BlockAxis::Rows }] {
        let mut w: Vec<f32> = (0..300_000).map(|i| (i as f32 * 0.37).sin() * 1000.0).collect();
        let st = quantize(&mut w, &[300, 1000], &QuantSpec { cast: CastSpec::new(Format::FLOAT8_E4M3FN), scaling: sc });
        eprintln!("{sc:?} {st:?}");
    }
}
