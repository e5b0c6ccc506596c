//! The progress bar of `vespa-agent import` on a terminal (indicatif): files and bytes of the
//! collection being brought in, then a spinner while DaCHS imports. Not drawn when stderr is
//! not a terminal, so logs and pipes stay clean.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::granules::stage::Watcher;
use crate::granules::transfer::human;

pub struct Bar {
    bar: ProgressBar,
    /// The collection the bar shows now.
    shown: Mutex<String>,
}

impl Bar {
    /// `None` unless stderr is a terminal.
    pub fn on_terminal() -> Option<Bar> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        Some(Bar {
            bar,
            shown: Mutex::new(String::new()),
        })
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Watcher for Bar {
    fn transfer(&self, collection: &str, done: usize, total: usize, bytes: u64) {
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        if *shown != collection {
            *shown = collection.to_owned();
            self.bar.disable_steady_tick();
            self.bar.reset();
            self.bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} files, {msg} ({eta})",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            self.bar.set_prefix(format!("bringing {collection}"));
        }
        self.bar.set_length(total as u64);
        self.bar.set_position(done as u64);
        self.bar.set_message(human(bytes));
    }

    fn import(&self, resource: &str, files: usize) {
        // The next collection, if any, sets its own style again.
        self.shown.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"),
        );
        self.bar
            .set_message(format!("dachs imp -c of {resource}: {files} files"));
        self.bar.enable_steady_tick(Duration::from_millis(120));
    }
}
