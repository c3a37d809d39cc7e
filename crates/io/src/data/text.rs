//! Text corpora: one file, or every non-hidden file under a directory (recursively, in sorted
//! path order so the token stream does not depend on the file system's listing order).
//!
//! The validation split is the tail of the corpus: the text is cut at the first newline after
//! [`VAL_FRACTION`] of its bytes from the end (or at that byte if no newline follows). Cutting
//! the *text*, before tokenization, lets a BPE tokenizer be trained on the training part only,
//! so no validation text leaks into the vocabulary.
//!
//! Byte-level tokens (vocab 256) are the default: no tokenizer to train, store or mismatch.
//! BPE uses the `tokenizers` crate with a GPT-2-style byte-level pre-tokenizer, so every input
//! is encodable. Bytes that are not UTF-8 are replaced by U+FFFD before BPE (the tokenizer
//! works on strings); byte-level loading keeps them as they are.

use super::{io_err, DataError, TokenDataset, VAL_FRACTION};
use std::path::{Path, PathBuf};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{Tokenizer, TokenizerBuilder, TokenizerImpl};

/// The files of a corpus, sorted.
fn corpus_files(path: &Path) -> Result<Vec<PathBuf>, DataError> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let p = entry.path();
            let ft = entry.file_type().map_err(io_err(&p))?;
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() || (ft.is_symlink() && p.is_file()) {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// All bytes of the corpus, concatenated in sorted file order.
fn read_corpus(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut bytes = Vec::new();
    for f in corpus_files(path)? {
        bytes.extend(std::fs::read(&f).map_err(io_err(&f))?);
    }
    if bytes.len() < 2 {
        return Err(DataError::TooSmall {
            what: format!("text corpus {}", path.display()),
            need: 2,
            have: bytes.len(),
        });
    }
    Ok(bytes)
}

/// Where the validation tail starts: just after the first newline at or past the
/// (1 − VAL_FRACTION) mark, else at the mark. Always leaves both parts non-empty.
fn split_point(bytes: &[u8]) -> usize {
    let n = bytes.len();
    let mark = ((n as f64 * (1.0 - VAL_FRACTION)) as usize).clamp(1, n - 1);
    match bytes[mark..].iter().position(|&b| b == b'\n') {
        Some(i) if mark + i + 1 < n => mark + i + 1,
        _ => mark,
    }
}

pub(super) fn load_bytes(path: &Path) -> Result<TokenDataset, DataError> {
    let bytes = read_corpus(path)?;
    let cut = split_point(&bytes);
    Ok(TokenDataset {
        train: bytes[..cut].iter().map(|&b| b as u32).collect(),
        val: bytes[cut..].iter().map(|&b| b as u32).collect(),
        vocab_size: 256,
        entropy_floor: None,
        description: format!(
            "bytes of {} ({} train / {} val tokens, vocab 256)",
            path.display(),
            cut,
            bytes.len() - cut
        ),
    })
}

const CHUNK: usize = 1 << 20;

/// Encode in chunks of about `chunk` bytes cut after newlines: one giant string would make the
/// pre-tokenizer hold every split of the corpus at once.
fn encode<F>(text: &str, chunk: usize, mut encode_chunk: F) -> Result<Vec<u32>, String>
where
    F: FnMut(&str) -> Result<Vec<u32>, String>,
{
    let mut ids = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(chunk);
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        if end < rest.len() {
            if let Some(nl) = rest[end..].find('\n') {
                end += nl + 1;
            }
        }
        ids.extend(encode_chunk(&rest[..end])?);
        rest = &rest[end..];
    }
    Ok(ids)
}

fn split_text(path: &Path) -> Result<(String, String), DataError> {
    let bytes = read_corpus(path)?;
    let cut = split_point(&bytes);
    Ok((
        String::from_utf8_lossy(&bytes[..cut]).into_owned(),
        String::from_utf8_lossy(&bytes[cut..]).into_owned(),
    ))
}

fn check_split(path: &Path, train: &[u32], val: &[u32]) -> Result<(), DataError> {
    if train.is_empty() || val.is_empty() {
        return Err(DataError::TooSmall {
            what: format!("tokenized corpus {} (train and val)", path.display()),
            need: 2,
            have: train.len() + val.len(),
        });
    }
    Ok(())
}

type BpeTokenizer =
    TokenizerImpl<BPE, NormalizerWrapper, ByteLevel, PostProcessorWrapper, ByteLevel>;

/// Train a byte-level BPE (GPT-2 style) on `text`, one line per training sequence (the trainer
/// counts words per sequence; lines keep its memory flat).
fn train_bpe(text: &str, vocab: usize) -> tokenizers::Result<BpeTokenizer> {
    let mut trainer = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(vocab)
        .min_frequency(2)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tok: BpeTokenizer = TokenizerBuilder::new()
        .with_model(BPE::default())
        .with_normalizer(None)
        // No prefix space: it would add a space at the start of every line while training
        // and of every chunk while encoding, so chunked encoding would differ from whole-text.
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
        .with_post_processor(None)
        .with_decoder(Some(ByteLevel::default()))
        .build()?;
    tok.train(&mut trainer, text.lines())?;
    Ok(tok)
}

pub(super) fn load_bpe(path: &Path, vocab: usize) -> Result<TokenDataset, DataError> {
    let (train_text, val_text) = split_text(path)?;
    let tk_err = |e: tokenizers::Error| DataError::Tokenizer {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    let tok = train_bpe(&train_text, vocab).map_err(tk_err)?;
    let actual_vocab = tok.get_vocab_size(true);
    let enc = |s: &str| {
        tok.encode(s, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| e.to_string())
    };
    let msg_err = |msg| DataError::Tokenizer {
        path: path.to_path_buf(),
        msg,
    };
    let train = encode(&train_text, CHUNK, enc).map_err(msg_err)?;
    let val = encode(&val_text, CHUNK, enc).map_err(msg_err)?;
    check_split(path, &train, &val)?;
    Ok(TokenDataset {
        description: format!(
            "BPE (vocab {actual_vocab}, trained on the train split) of {} ({} train / {} val tokens)",
            path.display(),
            train.len(),
            val.len()
        ),
        train,
        val,
        vocab_size: actual_vocab,
        entropy_floor: None,
    })
}

pub(super) fn load_with_tokenizer(
    tokenizer: &Path,
    path: &Path,
) -> Result<TokenDataset, DataError> {
    let tok = Tokenizer::from_file(tokenizer).map_err(|e| DataError::Tokenizer {
        path: tokenizer.to_path_buf(),
        msg: format!("loading: {e}"),
    })?;
    let (train_text, val_text) = split_text(path)?;
    let vocab = tok.get_vocab_size(true);
    let enc = |s: &str| {
        tok.encode(s, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| e.to_string())
    };
    let msg_err = |msg| DataError::Tokenizer {
        path: tokenizer.to_path_buf(),
        msg,
    };
    let train = encode(&train_text, CHUNK, enc).map_err(msg_err)?;
    let val = encode(&val_text, CHUNK, enc).map_err(msg_err)?;
    check_split(path, &train, &val)?;
    // get_vocab_size counts added tokens, but ids can still exceed it if the file has holes.
    let vocab = vocab.max(
        train
            .iter()
            .chain(&val)
            .max()
            .map_or(0, |&m| m as usize + 1),
    );
    Ok(TokenDataset {
        description: format!(
            "{} encoded with {} (vocab {vocab}; {} train / {} val tokens)",
            path.display(),
            tokenizer.display(),
            train.len(),
            val.len()
        ),
        train,
        val,
        vocab_size: vocab,
        entropy_floor: None,
    })
}

/// Train a BPE tokenizer on the training split of `path` and save it as `tokenizer.json`, so runs can
/// share one vocabulary via `tokenizer:OUT:PATH`.
pub fn train_bpe_to_file(path: &Path, vocab: usize, out: &Path) -> Result<(), DataError> {
    let (train_text, _) = split_text(path)?;
    let tk_err = |e: tokenizers::Error| DataError::Tokenizer {
        path: out.to_path_buf(),
        msg: e.to_string(),
    };
    let tok = train_bpe(&train_text, vocab).map_err(tk_err)?;
    tok.save(out, false).map_err(tk_err)
}

#[cfg(test)]
mod tests {
    use super::super::DataSpec;
    use super::*;

    const TEXT: &str = "the quick brown fox jumps over the lazy dog\n";

    #[test]
    fn bytes_from_file_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.txt");
        std::fs::write(&f, TEXT.repeat(10)).unwrap();
        let d = DataSpec::parse(f.to_str().unwrap())
            .unwrap()
            .load()
            .unwrap();
        assert_eq!(d.vocab_size, 256);
        let all: Vec<u32> = d.train.iter().chain(&d.val).copied().collect();
        assert_eq!(
            all,
            TEXT.repeat(10).bytes().map(u32::from).collect::<Vec<_>>()
        );
        // The cut is at a line boundary near 90%.
        assert_eq!(d.train.len(), TEXT.len() * 9);
        assert_eq!(d.val.len(), TEXT.len());

        // Directory: sorted order, hidden files skipped, subdirectories included.
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.txt"), "B").unwrap();
        std::fs::write(dir.path().join(".hidden"), "H").unwrap();
        let d = DataSpec::parse(dir.path().to_str().unwrap())
            .unwrap()
            .load()
            .unwrap();
        let all: Vec<u8> = d.train.iter().chain(&d.val).map(|&t| t as u8).collect();
        assert_eq!(all, format!("{}B", TEXT.repeat(10)).into_bytes());
    }

    #[test]
    fn missing_and_tiny_files_are_errors() {
        let e = DataSpec::parse("/no/such/corpus.txt")
            .unwrap()
            .load()
            .unwrap_err();
        assert!(e.to_string().contains("/no/such/corpus.txt"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("one");
        std::fs::write(&f, "x").unwrap();
        let e = DataSpec::Bytes(f).load().unwrap_err();
        assert!(e.to_string().contains("need at least 2"), "{e}");
    }

    #[test]
    fn bpe_trains_saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("corpus.txt");
        let text: String = (0..300)
            .map(|i| format!("{} number {i} is {}\n", TEXT.trim(), i % 7))
            .collect();
        std::fs::write(&f, &text).unwrap();
        let d = DataSpec::parse(&format!("bpe:{}:400", f.display()))
            .unwrap()
            .load()
            .unwrap();
        assert!(
            d.vocab_size > 256 && d.vocab_size <= 400,
            "{}",
            d.vocab_size
        );
        assert!(d
            .train
            .iter()
            .chain(&d.val)
            .all(|&t| (t as usize) < d.vocab_size));
        // Merges compress: fewer tokens than bytes.
        assert!(d.train.len() + d.val.len() < text.len() / 2);

        // Encoding in newline-cut chunks gives the same ids as encoding the whole text.
        let tok = train_bpe(&text, 400).unwrap();
        let enc = |s: &str| Ok(tok.encode(s, false).unwrap().get_ids().to_vec());
        assert_eq!(
            encode(&text, 100, enc).unwrap(),
            encode(&text, usize::MAX, enc).unwrap()
        );

        let tj = dir.path().join("tokenizer.json");
        train_bpe_to_file(&f, 400, &tj).unwrap();
        let d2 = DataSpec::parse(&format!("tokenizer:{}:{}", tj.display(), f.display()))
            .unwrap()
            .load()
            .unwrap();
        assert_eq!(d2.train, d.train);
        let e = DataSpec::parse(&format!("tokenizer:{}:{}", f.display(), f.display()))
            .unwrap()
            .load()
            .unwrap_err();
        assert!(e.to_string().contains("loading"), "{e}");
    }
}
