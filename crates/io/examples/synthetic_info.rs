//! Print the entropy rate of a synthetic data spec and how long building it takes.
//!
//! `cargo run --release -p fp8-io --example synthetic_info -- "synthetic:vocab=256,order=2"`

use std::time::Instant;

fn main() {
    let spec = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "synthetic".to_string());
    let t = Instant::now();
    match fp8_io::data::DataSpec::parse(&spec).and_then(|s| s.load()) {
        Ok(d) => {
            println!("{}", d.description);
            println!(
                "train {} / val {} tokens, vocab {}, entropy floor {:?} nats, built in {:.2?}",
                d.train.len(),
                d.val.len(),
                d.vocab_size,
                d.entropy_floor,
                t.elapsed()
            );
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
