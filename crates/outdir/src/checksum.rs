//! SHA-256 of files, streamed (weights are hundreds of MB).

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{OutDirError, Result};

/// Lower-case hex SHA-256 of one file's bytes.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut h = Sha256::new();
    feed(&mut h, path)?;
    Ok(hex(&h.finalize()))
}

/// One SHA-256 over several files: each file's name, length and bytes in the given order,
/// so renaming or moving bytes between files changes it.
pub fn sha256_files(paths: &[&Path]) -> Result<String> {
    let mut h = Sha256::new();
    for path in paths {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let len = std::fs::metadata(path).map_err(|e| OutDirError::io(*path, e))?.len();
        h.update(format!("{name}\0{len}\0").as_bytes());
        feed(&mut h, path)?;
    }
    Ok(hex(&h.finalize()))
}

fn feed(h: &mut Sha256, path: &Path) -> Result<()> {
    let mut file = std::fs::File::open(path).map_err(|e| OutDirError::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| OutDirError::io(path, e))?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests_and_order_sensitivity() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, b"abc").unwrap();
        std::fs::write(&b, b"").unwrap();
        // FIPS 180-2 test vectors.
        assert_eq!(sha256_file(&a).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(sha256_file(&b).unwrap(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let ab = sha256_files(&[&a, &b]).unwrap();
        assert_ne!(ab, sha256_files(&[&b, &a]).unwrap());
        std::fs::write(&b, b"x").unwrap();
        assert_ne!(ab, sha256_files(&[&a, &b]).unwrap());
        let err = sha256_file(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
