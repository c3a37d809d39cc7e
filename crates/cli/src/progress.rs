//! How the CLI shows a run's and a sweep's progress: a progress bar on a terminal, periodic
//! plain lines otherwise (a log file, a sweep worker's `train.log`).

use fp8_stats::results::{RunResult, Summary};
use fp8_train::observer::{Evaluated, Observer, RunStarted, StepDone};
use fp8_train::sweep::SweepObserver;
use std::io::IsTerminal;

/// Renders a training run on stderr.
#[derive(Default)]
pub struct TrainProgress {
    bar: Option<indicatif::ProgressBar>,
}

impl TrainProgress {
    fn line(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
}

impl Observer for TrainProgress {
    fn started(&mut self, run: &RunStarted) {
        if run.start_step == 0 {
            match run.entropy_floor {
                Some(h) => eprintln!("data: {} (entropy floor {h:.4} nats/token)", run.data),
                None => eprintln!("data: {}", run.data),
            }
        }
        eprintln!("run {} in {}", run.id, run.run_dir.display());
        self.bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(run.total_steps);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise}<{eta_precise}]",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b.set_position(run.start_step);
            b
        });
    }

    fn step(&mut self, s: &StepDone) {
        match &self.bar {
            Some(b) => {
                b.set_position(s.done);
                b.set_message(format!("loss {:.4}  {:.0} tok/s", s.loss, s.tokens_per_s));
            }
            None => {
                let every = (s.total / 20).max(1);
                if s.done.is_multiple_of(every) || s.done == s.total {
                    eprintln!(
                        "step {}/{}: loss {:.4}, {:.0} tokens/s",
                        s.done, s.total, s.loss, s.tokens_per_s
                    );
                }
            }
        }
    }

    fn evaluated(&mut self, e: &Evaluated) {
        self.line(&format!(
            "step {}: val loss {:.4}, sharpness {:.4}",
            e.done, e.val_loss, e.sharpness
        ));
    }

    fn note(&mut self, line: &str) {
        self.line(line);
    }

    fn finished(&mut self, _summary: &Summary) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Renders a sweep on stderr, one line per finished point.
#[derive(Default)]
pub struct SweepProgress;

impl SweepObserver for SweepProgress {
    fn note(&mut self, line: &str) {
        eprintln!("{line}");
    }

    fn finished(&mut self, done: usize, of: usize, name: &str, r: &RunResult) {
        eprintln!(
            "[{done}/{of}] {name}: {}, final loss {:.4}",
            r.outcome, r.final_loss
        );
    }

    fn failed(&mut self, done: usize, of: usize, name: &str, why: &str) {
        eprintln!("[{done}/{of}] {name}: {why}");
    }
}
