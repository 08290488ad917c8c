//! The kernel source: its kernel list, NVRTC's compile for Hopper, launch checks, LayerNorm's
//! register path.

use crate::common::*;

#[test]
fn kernel_lists_agree_with_the_source_and_the_emulator() {
    let listed: BTreeSet<String> = KERNEL_NAMES.iter().map(|s| s.to_string()).collect();
    let emulated: BTreeSet<String> = host_kernel_names().into_iter().collect();
    assert_eq!(emulated, listed);
    // Plain kernels by their definitions; attention kernels by their instantiations.
    for name in &listed {
        let plain = SOURCE.contains(&format!("__global__ void {name}("));
        let instance = name.rsplit_once("_hs").is_some_and(|(stem, hs)| {
            SOURCE.contains(&format!("void {stem}_hs##HS("))
                && SOURCE.contains(&format!("({hs})\n"))
        });
        assert!(
            plain || instance,
            "{name} is not defined in the kernel source"
        );
    }
    assert!(stagewise_cuda::kernels::attention_kernel("attention_forward", 12).is_err());
}

/// The host build (kernels.cu's includes) and NVRTC's source (the concatenated parts) are the
/// same parts in the same order.
#[test]
fn host_includes_are_the_parts_nvrtc_compiles() {
    use stagewise_cuda::kernels::{HOST_INCLUDES, PARTS};
    let included: Vec<&str> = HOST_INCLUDES
        .lines()
        .filter_map(|l| l.strip_prefix("#include \""))
        .map(|l| l.trim_end_matches(".cuh\""))
        .collect();
    assert_eq!(included, PARTS);
    let parts: usize = PARTS
        .iter()
        .map(|p| {
            let path = format!("{}/kernels/{p}.cuh", env!("CARGO_MANIFEST_DIR"));
            std::fs::read_to_string(&path).unwrap().len()
        })
        .sum();
    assert_eq!(parts, SOURCE.len());
}

/// NVRTC (the library alone, no GPU) compiles the kernels for Hopper. CI installs NVRTC and sets
/// STAGEWISE_REQUIRE_NVRTC=1; elsewhere the test is skipped when the library is missing.
#[test]
fn nvrtc_compiles_the_kernels_for_hopper() {
    match stagewise_cuda::kernels::compile("compute_90", &[]) {
        Ok((ptx, _)) => {
            for name in KERNEL_NAMES {
                assert!(
                    ptx.contains(&format!(".entry {name}(")),
                    "{name} missing from the PTX"
                );
            }
            // Compilations are kept per option set: another architecture is compiled anew.
            assert!(ptx.contains(".target sm_90"));
            let (again, _) = stagewise_cuda::kernels::compile("compute_90", &[]).unwrap();
            assert_eq!(again, ptx);
            let (ampere, _) = stagewise_cuda::kernels::compile("compute_80", &[]).unwrap();
            assert!(
                ampere.contains(".target sm_80"),
                "the cache ignored the architecture"
            );
        }
        Err(stagewise_cuda::GpuError::NoDevice(why)) => {
            assert!(
                std::env::var("STAGEWISE_REQUIRE_NVRTC").is_err(),
                "STAGEWISE_REQUIRE_NVRTC is set but {why}"
            );
            eprintln!("skipped: {why}");
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
#[ignore = "prints ptxas's register and spill report; run with --ignored --nocapture where NVRTC is installed"]
fn print_resource_report() {
    println!(
        "{}",
        stagewise_cuda::kernels::resource_report("sm_90").unwrap()
    );
}

#[test]
fn launches_with_arguments_that_do_not_fit_the_kernel_are_refused() {
    let dev = emulator();
    let b = Buf::<f32>::new(&dev, 8).unwrap();
    // fill_f32(float*, float, long long): an int count would misread on the GPU too.
    let err = dev
        .launch("fill_f32", 8, &[b.arg(), Arg::F32(1.0), Arg::I32(8)])
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("pfi do not match the parameters pfl"),
        "{err}"
    );
    assert!(dev.launch("no_such_kernel", 1, &[]).is_err());
    dev.launch("fill_f32", 8, &[b.arg(), Arg::F32(1.5), Arg::I64(8)])
        .unwrap();
    assert_eq!(b.download().unwrap(), vec![1.5; 8]);
    // Fresh memory is NaN, so reads of unwritten memory show.
    assert!(
        Buf::<f32>::new(&dev, 4)
            .unwrap()
            .download()
            .unwrap()
            .iter()
            .all(|v| v.is_nan())
    );
}

/// The LayerNorm and readout kernels' register path (rows of 8..64 floats, 16-byte aligned,
/// read with vector loads) gives the same bits as their generic path (taken for rows that are
/// not aligned), LayerNorm forward and backward in each of its three modes.
#[test]
fn layernorm_register_rows_equal_the_generic_loops() {
    let dev = emulator();
    let mut seq = 0;
    let mut fill = |n: usize| -> Vec<f32> {
        seq += 1;
        let mut z = vec![0.0f64; n];
        Stream::new(21, 0, seq, 0).fill_normal(&mut z);
        z.iter().map(|v| *v as f32).collect()
    };
    for c in [8usize, 64] {
        let rows = 6;
        let n = rows * c;
        // Parameters: w at 0, b at c (of p = 2c per set); one set.
        let params = Buf::from_host(&dev, &fill(2 * c)).unwrap();
        let inputs: Vec<Vec<f32>> = (0..4).map(|_| fill(n)).collect();
        // Each tensor at offset 0 (aligned rows) or 1 float (misaligned: the generic loops).
        let run = |shift: usize| -> Vec<Vec<f32>> {
            let up = |v: &[f32]| {
                let mut h = vec![0.0f32; shift];
                h.extend_from_slice(v);
                Buf::from_host(&dev, &h).unwrap()
            };
            let at = |b: &Buf<f32>| Arg::Ptr(b.ptr.add::<f32>(shift));
            let (x, dy, dxn) = (up(&inputs[0]), up(&inputs[1]), up(&inputs[2]));
            let out = up(&vec![0.0; n]);
            let (mean, rstd) = (
                Buf::<f32>::new(&dev, rows).unwrap(),
                Buf::<f32>::new(&dev, rows).unwrap(),
            );
            let fwd = [
                at(&out),
                mean.arg(),
                rstd.arg(),
                at(&x),
                params.arg(),
                Arg::I64(2 * c as i64),
                Arg::I64(0),
                Arg::I64(c as i64),
                Arg::I32(c as i32),
                Arg::F32(1e-5),
                Arg::I64(rows as i64),
                Arg::I64(rows as i64),
            ];
            dev.launch("layernorm_forward", rows, &fwd).unwrap();
            let mut got = vec![
                out.download().unwrap()[shift..].to_vec(),
                mean.download().unwrap(),
                rstd.download().unwrap(),
            ];
            // The readout of the normalised rows (a row's dot product with Wu's first row).
            let (pred, sq, dpred) = (
                Buf::<f32>::new(&dev, rows).unwrap(),
                Buf::<f32>::new(&dev, rows).unwrap(),
                Buf::<f32>::new(&dev, rows).unwrap(),
            );
            let ys = Buf::from_host(&dev, &inputs[3][..rows]).unwrap();
            let readout = [
                pred.arg(),
                sq.arg(),
                dpred.arg(),
                at(&x),
                ys.arg(),
                params.arg(),
                Arg::I64(2 * c as i64),
                Arg::I64(0),
                Arg::I64(c as i64),
                Arg::I32(1),
                Arg::I32(c as i32),
                Arg::I32(rows as i32),
                Arg::F32(0.5),
                Arg::I64(rows as i64),
            ];
            dev.launch("readout_loss", rows, &readout).unwrap();
            got.extend([pred.download().unwrap(), sq.download().unwrap()]);
            for mode in 0..3 {
                let (dx, dyxhat, dattn) = (up(&inputs[3]), up(&vec![0.0; n]), up(&vec![0.0; n]));
                let bwd = [
                    at(&dx),
                    at(&dyxhat),
                    at(&dy),
                    at(&x),
                    mean.arg(),
                    rstd.arg(),
                    params.arg(),
                    Arg::I64(2 * c as i64),
                    Arg::I64(0),
                    Arg::I32(c as i32),
                    Arg::I32(mode),
                    at(&dxn),
                    at(&dattn),
                    Arg::I64(rows as i64),
                    Arg::I64(rows as i64),
                ];
                dev.launch("layernorm_backward", rows, &bwd).unwrap();
                for b in [&dx, &dyxhat, &dattn] {
                    got.push(b.download().unwrap()[shift..].to_vec());
                }
            }
            got
        };
        let (vector, generic) = (run(0), run(1));
        for (i, (a, b)) in vector.iter().zip(&generic).enumerate() {
            let (a, b): (Vec<u32>, Vec<u32>) = (
                a.iter().map(|v| v.to_bits()).collect(),
                b.iter().map(|v| v.to_bits()).collect(),
            );
            assert_eq!(a, b, "C = {c}: output {i} differs between the two paths");
        }
        assert!(vector[0].iter().all(|v| v.is_finite()));
    }
}

/// NaN propagates through the ReLU kernels as in PyTorch: `bias_relu` keeps a NaN
/// pre-activation, `relu_backward` passes the gradient where the activation is NaN.
#[test]
fn relu_kernels_keep_nan_as_pytorch_does() {
    let dev = emulator();
    // One chain, 2 rows of m = 3; the bias is parameters 0..3 (zero).
    let r = Buf::from_host(&dev, &[-1.0f32, f32::NAN, 2.0, 0.0, -0.0, 3.0]).unwrap();
    let params = Buf::from_host(&dev, &[0.0f32; 3]).unwrap();
    let args = [
        r.arg(),
        params.arg(),
        Arg::I64(3),
        Arg::I64(0),
        Arg::I32(3),
        Arg::I64(2),
        Arg::I64(6),
    ];
    dev.launch("bias_relu", 6, &args).unwrap();
    let out = r.download().unwrap();
    assert!(out[1].is_nan(), "{out:?}");
    assert_eq!(
        [out[0], out[2], out[3], out[4], out[5]],
        [0.0, 2.0, 0.0, 0.0, 3.0]
    );
    let dr = Buf::from_host(&dev, &[1.0f32; 6]).unwrap();
    let df = Buf::<f32>::new(&dev, 6).unwrap();
    dev.launch(
        "relu_backward",
        6,
        &[df.arg(), dr.arg(), r.arg(), Arg::I64(6)],
    )
    .unwrap();
    assert_eq!(df.download().unwrap(), [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]);
}
