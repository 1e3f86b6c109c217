//! Round trips with real Python: `tests/py/zblk_oracle.py` builds databases
//! of ZBigArrays with ZODB 6.4, BTrees and numpy (through stand-ins of
//! wendelin.core's classes), and writes what Python sees for every array as
//! of every transaction. We must read the same geometry and bytes, in both
//! orders, write the same `.npy` bytes as `np.save`, and `numpy.load` must
//! read our `.npy` files equal to the arrays.
//!
//! Skipped with a notice without the venv Python; a failure in CI
//! (`CI=true`).

use std::path::{Path, PathBuf};
use std::process::Command;

use filestorage::FileStorage;
use serde_json::Value as Json;
use zblk::array::ZBigArray;
use zblk::format::{BlockFormat, Order};
use zodb_core::storage::Snapshot;
use zodb_core::{Oid, Tid};

fn oracle_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/zblk_oracle.py")
}

fn oracle(py: &Path, args: &[&str]) -> String {
    let out = Command::new(py)
        .arg(oracle_script())
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    assert!(
        out.status.success(),
        "zblk_oracle.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where two item streams first differ in the bytes `mask` marks as field
/// bytes (all bytes when it is empty), for messages. NumPy leaves padding
/// of reordered structured arrays uninitialized; ours must be zeros.
fn masked_diff(got: &[u8], want: &[u8], mask: &[u8]) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!(
            "in length: ours {}, Python {}",
            got.len(),
            want.len()
        ));
    }
    let field = |i: usize| mask.is_empty() || mask[i % mask.len()] != 0;
    let i = (0..got.len()).find(|&i| {
        if field(i) {
            got[i] != want[i]
        } else {
            got[i] != 0 && got[i] != want[i]
        }
    })?;
    let end = |v: &[u8]| v[i..v.len().min(i + 16)].to_vec();
    Some(format!(
        "at byte {i}: ours {:02x?}, Python {:02x?}",
        end(got),
        end(want)
    ))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Generates one database and checks every (array, transaction).
fn round_trip(seed: u64, protocol: u8) {
    let Some(py) = zodb_it::python() else { return };
    let dir = tempfile::Builder::new()
        .prefix("zblk-rt-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    oracle(
        &py,
        &[
            "gen",
            d.to_str().unwrap(),
            &seed.to_string(),
            &protocol.to_string(),
        ],
    );
    let manifest: Json = serde_json::from_slice(&read(&d.join("manifest.json"))).unwrap();
    let fs = FileStorage::open_read_only(d.join("Data.fs")).unwrap();
    let checks = manifest["checks"].as_array().unwrap();
    assert!(!checks.is_empty());
    for c in checks {
        let base = c["base"].as_str().unwrap();
        let what = format!("seed {seed} protocol {protocol}: {base}");
        let tid: Tid = c["tid"].as_str().unwrap().parse().unwrap();
        let oid = Oid(c["oid"].as_u64().unwrap());
        let a =
            ZBigArray::open(Snapshot::at(&fs, tid), oid).unwrap_or_else(|e| panic!("{what}: {e}"));
        let ints = |k: &str| -> Vec<u64> {
            c[k].as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect()
        };

        assert_eq!(a.shape(), ints("shape"), "{what}: shape");
        assert_eq!(a.strides(), ints("stridev"), "{what}: strides");
        assert_eq!(
            a.view_layout().shape,
            ints("view_shape"),
            "{what}: view shape"
        );
        assert_eq!(
            a.dtype().numpy_str(),
            c["dtype_str"].as_str().unwrap(),
            "{what}: dtype"
        );
        assert_eq!(
            a.itemsize(),
            c["itemsize"].as_u64().unwrap(),
            "{what}: itemsize"
        );
        assert_eq!(a.nbytes(), c["nbytes"].as_u64().unwrap(), "{what}: nbytes");
        let order = a.state().order.map(|o| o.as_char().to_string());
        assert_eq!(order.as_deref(), c["order"].as_str(), "{what}: _order");
        let h = a.npy_header().unwrap();
        assert_eq!(
            h.descr.to_python(),
            c["descr"].as_str().unwrap(),
            "{what}: descr"
        );
        assert_eq!(
            h.fortran_order,
            c["fortran_order"].as_bool().unwrap(),
            "{what}: fortran_order"
        );

        assert_eq!(
            a.file().blksize(),
            c["blksize"].as_u64().unwrap(),
            "{what}: blksize"
        );
        assert_eq!(
            a.file().nblocks().unwrap(),
            c["nblocks"].as_u64().unwrap(),
            "{what}: nblocks"
        );
        let st = a.file().stats().unwrap();
        for f in BlockFormat::ALL {
            let want = c["blocks"]
                .get(f.class_name())
                .and_then(Json::as_u64)
                .unwrap_or(0);
            assert_eq!(st.count(f), want, "{what}: {} blocks", f.class_name());
        }

        let mask = hex::decode(c["field_mask"].as_str().unwrap()).unwrap();
        for (order, ext) in [(Order::C, "C"), (Order::F, "F")] {
            let want = read(&d.join(format!("{base}.{ext}")));
            let mut got = Vec::new();
            let n = a.write_to(order, &mut got, &mut |_| {}).unwrap();
            assert_eq!(n, want.len() as u64, "{what}: {ext} length");
            let diff = masked_diff(&got, &want, &mask);
            assert!(
                diff.is_none(),
                "{what}: bytes in {ext} order differ {}",
                diff.unwrap_or_default()
            );
            let mut buf = vec![0xa5u8; want.len()];
            a.read_into(order, &mut buf).unwrap();
            assert!(buf == got, "{what}: read_into {ext} differs from write_to");
        }
        let mut npy = Vec::new();
        let n = a.write_npy(&mut npy, &mut |_| {}).unwrap();
        assert_eq!(n, npy.len() as u64);
        let want = read(&d.join(format!("{base}.npy")));
        let header = want.len() - a.nbytes() as usize;
        assert_eq!(npy[..header], want[..header], "{what}: .npy header");
        assert!(
            masked_diff(&npy[header..], &want[header..], &mask).is_none(),
            "{what}: .npy differs from np.save\n ours: {:?}\n numpy: {:?}",
            String::from_utf8_lossy(&npy[..npy.len().min(200)]),
            String::from_utf8_lossy(&want[..want.len().min(200)])
        );
        std::fs::write(d.join(format!("{base}.ours.npy")), &npy).unwrap();
    }
    let out = oracle(
        &py,
        &["check-npy", d.join("manifest.json").to_str().unwrap()],
    );
    assert_eq!(out.trim(), format!("ok {}", checks.len()));
}

#[test]
fn random_arrays_seed_11() {
    round_trip(11, 3);
}

#[test]
fn random_arrays_seed_12() {
    round_trip(12, 3);
}

#[test]
fn random_arrays_seed_13() {
    round_trip(13, 3);
}

/// Protocol 2 from Python 3: block bytes pickled as
/// `_codecs.encode(text, 'latin1')`.
#[test]
fn random_arrays_protocol_2() {
    round_trip(14, 2);
}

/// More seeds on demand: `ZBLK_SEEDS=100-120 cargo test -p zblk --test python_roundtrip more_seeds`.
#[test]
fn more_seeds() {
    let Ok(spec) = std::env::var("ZBLK_SEEDS") else {
        return;
    };
    let (a, b) = spec.split_once('-').unwrap_or((&spec, &spec));
    for seed in a.parse::<u64>().unwrap()..=b.parse::<u64>().unwrap() {
        round_trip(seed, if seed % 4 == 0 { 2 } else { 3 });
    }
}
