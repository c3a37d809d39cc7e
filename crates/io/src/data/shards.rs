//! nanoGPT shards: `train.bin` and `val.bin` in one directory, each a flat array of
//! little-endian uint16 token ids (what nanoGPT's `prepare.py` scripts write with
//! `np.array(ids, dtype=np.uint16).tofile(...)`). There is no header, so the only checks possible
//! are the ones done here: an even byte length, and every id below the vocabulary size. The
//! vocabulary is not stored with the shards (nanoGPT keeps it in `meta.pkl` or assumes GPT-2's
//! 50257), so the spec carries it.
//!
//! Both files are read into memory whole (4 bytes per token as u32).

use super::{io_err, DataError, TokenDataset};
use std::path::Path;

fn read_shard(path: &Path, vocab: usize) -> Result<Vec<u32>, DataError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    if bytes.len() % 2 != 0 {
        return Err(DataError::OddLength {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
        });
    }
    let tokens: Vec<u32> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
        .collect();
    if let Some((index, &token)) = tokens
        .iter()
        .enumerate()
        .find(|(_, &t)| t as usize >= vocab)
    {
        return Err(DataError::TokenOutOfRange {
            path: path.to_path_buf(),
            index,
            token,
            vocab,
        });
    }
    if tokens.len() < 2 {
        return Err(DataError::TooSmall {
            what: format!("shard {}", path.display()),
            need: 2,
            have: tokens.len(),
        });
    }
    Ok(tokens)
}

pub(super) fn load(dir: &Path, vocab: usize) -> Result<TokenDataset, DataError> {
    let train = read_shard(&dir.join("train.bin"), vocab)?;
    let val = read_shard(&dir.join("val.bin"), vocab)?;
    Ok(TokenDataset {
        description: format!(
            "nanoGPT shards in {} ({} train / {} val tokens, vocab {vocab})",
            dir.display(),
            train.len(),
            val.len()
        ),
        train,
        val,
        vocab_size: vocab,
        entropy_floor: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::DataSpec;

    fn write_u16(path: &std::path::Path, ids: &[u16]) {
        let bytes: Vec<u8> = ids.iter().flat_map(|t| t.to_le_bytes()).collect();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn reads_shards_and_checks_them() {
        let dir = tempfile::tempdir().unwrap();
        write_u16(&dir.path().join("train.bin"), &[1, 2, 300, 50256]);
        write_u16(&dir.path().join("val.bin"), &[7, 8]);
        let d = DataSpec::parse(dir.path().to_str().unwrap())
            .unwrap()
            .load()
            .unwrap();
        assert_eq!(d.train, vec![1, 2, 300, 50256]);
        assert_eq!(d.val, vec![7, 8]);
        assert_eq!(d.vocab_size, 50257);

        // Out of range for a smaller vocabulary: names the file, position and fix.
        let spec = format!("shards:{}:300", dir.path().display());
        let e = DataSpec::parse(&spec)
            .unwrap()
            .load()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train.bin") && e.contains("token 300 at position 2"),
            "{e}"
        );
        assert!(e.contains("shards:DIR:VOCAB"), "{e}");

        // Odd length.
        std::fs::write(dir.path().join("val.bin"), [1u8, 0, 2]).unwrap();
        let e = DataSpec::parse(dir.path().to_str().unwrap())
            .unwrap()
            .load()
            .unwrap_err()
            .to_string();
        assert!(e.contains("val.bin") && e.contains("3 bytes"), "{e}");

        // Missing val.bin.
        std::fs::remove_file(dir.path().join("val.bin")).unwrap();
        let e = DataSpec::parse(dir.path().to_str().unwrap())
            .unwrap()
            .load()
            .unwrap_err()
            .to_string();
        assert!(e.contains("val.bin"), "{e}");
    }
}
