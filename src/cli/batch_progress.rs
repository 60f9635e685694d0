//! How `diffsr upscale` shows a run: progress bars on a terminal (overall, counted in denoising
//! steps so the ETA follows the real work, and the current image), plain lines when stderr is
//! not a terminal, nothing but failures and the summary under `--quiet`, and one JSON event a
//! line on stdout under `--json` for scripts; under `--json` a failure that stops the run
//! before its jobs (a bad option, the model not loading) is an `error` event and a summary.
//! Paths and messages are shown with their control characters escaped (`diffsr::text_escape`).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use diffsr::batch::{Event, Plan, Summary};
use diffsr::text_escape::{self, path as shown};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The overall and per-image bars of a terminal display.
struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    image: ProgressBar,
}

/// Prints a run's [`Event`]s.
pub struct Reporter {
    json: bool,
    quiet: bool,
    bars: Option<Bars>,
    /// The jobs of the plan, once there is one (for the summary of a run that fails early).
    planned: usize,
    /// Whether the summary was printed: the run's end was reported.
    summary_sent: bool,
}

impl Reporter {
    /// A reporter for a run not planned yet: [`Reporter::begin`] follows once it is.
    pub fn new(json: bool, quiet: bool) -> Self {
        Self {
            json,
            quiet,
            bars: None,
            planned: 0,
            summary_sent: false,
        }
    }

    /// The run is planned: `plan` sizes the overall bar (its jobs' steps in all).
    pub fn begin(&mut self, plan: &Plan) {
        self.planned = plan.jobs.len() + plan.skipped.len();
        let live = !self.json && !self.quiet && std::io::stderr().is_terminal();
        self.bars = live.then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let steps: usize = plan.jobs.iter().map(|j| j.options.diffusion.steps).sum();
            let overall = multi.add(ProgressBar::new(steps as u64));
            overall.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {percent:>3}% {elapsed_precise} ETA {eta_precise}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            overall.set_prefix(format!("0/{} images", plan.jobs.len()));
            let image = multi.add(ProgressBar::new(0));
            image.set_style(
                ProgressStyle::with_template("  {msg} [{bar:30}] step {pos}/{len}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            overall.enable_steady_tick(Duration::from_millis(200));
            Bars {
                multi,
                overall,
                image,
            }
        });
    }

    /// The run failed before its end was reported (`message`: the error as the user sees it).
    /// Under `--json` it becomes an `error` event and a summary with every planned job not
    /// started, so a script reading stdout learns of it; otherwise the caller's `error:` line
    /// on stderr says it all.
    pub fn run_failed(&mut self, message: &str) {
        if !self.json || self.summary_sent {
            return;
        }
        self.print_json(&Event::Error {
            error: message.to_string(),
        });
        let summary = Summary {
            total: self.planned,
            not_started: self.planned,
            ..Summary::default()
        };
        self.print_json(&Event::Summary(summary));
        self.summary_sent = true;
    }

    fn print_json(&self, event: &Event) {
        if let Ok(line) = text_escape::to_json(event) {
            let mut out = std::io::stdout().lock();
            // A closed stdout (the script went away) must not stop the run.
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
    }

    /// A line on stderr that does not tear the bars.
    fn line(&self, text: &str) {
        match &self.bars {
            Some(b) => b.multi.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    pub fn event(&mut self, event: &Event) {
        if matches!(event, Event::Summary(_)) {
            self.summary_sent = true;
        }
        if self.json {
            self.print_json(event);
            // Failures and the closing line still reach a human watching stderr.
            match event {
                Event::Failed { input, error, .. } => {
                    eprintln!("failed: {}: {}", shown(input), text_escape::text(error));
                }
                Event::Summary(summary) => eprintln!("{}", describe(summary)),
                _ => {}
            }
            return;
        }
        match event {
            Event::Skipped { output, .. } => {
                if !self.quiet {
                    self.line(&format!("skipped (exists): {}", shown(output)));
                }
            }
            Event::Started {
                position,
                count,
                input,
                output,
                steps,
                ..
            } => {
                if let Some(b) = &self.bars {
                    b.overall
                        .set_prefix(format!("{}/{count} images", position - 1));
                    b.image.reset();
                    b.image.set_length(*steps as u64);
                    b.image.set_message(
                        text_escape::escape(
                            &input.file_name().unwrap_or_default().to_string_lossy(),
                        )
                        .into_owned(),
                    );
                } else if !self.quiet && *count > 1 {
                    eprintln!("[{position}/{count}] {} -> {}", shown(input), shown(output));
                }
            }
            Event::Step { .. } => {
                if let Some(b) = &self.bars {
                    b.image.inc(1);
                    b.overall.inc(1);
                }
            }
            Event::Note { message, .. } => {
                self.line(&format!("note: {}", text_escape::text(message)));
            }
            Event::Error { error } => self.line(&format!("error: {}", text_escape::text(error))),
            Event::Done {
                output,
                width,
                height,
                seconds,
                ..
            } => {
                if !self.quiet {
                    self.line(&format!(
                        "wrote {} ({width}x{height}) in {seconds:.1}s",
                        shown(output)
                    ));
                }
            }
            Event::Failed { input, error, .. } => {
                if let Some(b) = &self.bars {
                    // The failed image's steps will never run: count them as done for the ETA.
                    let left = b
                        .image
                        .length()
                        .unwrap_or(0)
                        .saturating_sub(b.image.position());
                    b.overall.inc(left);
                }
                self.line(&format!(
                    "failed: {}: {}",
                    shown(input),
                    text_escape::text(error)
                ));
            }
            Event::Summary(summary) => {
                if let Some(b) = self.bars.take() {
                    b.image.finish_and_clear();
                    b.overall.finish_and_clear();
                }
                if summary.total > 1 || summary.failed > 0 || summary.cancelled {
                    eprintln!("{}", describe(summary));
                    for f in &summary.failures {
                        eprintln!("  {}: {}", shown(&f.input), text_escape::text(&f.error));
                    }
                }
            }
        }
    }
}

/// The closing line: how many were done, failed, skipped or left.
pub fn describe(s: &Summary) -> String {
    let mut text = format!(
        "{} done, {} failed, {} skipped of {} in {:.1}s",
        s.done, s.failed, s.skipped, s.total, s.seconds
    );
    if s.cancelled {
        text.push_str(&format!(
            "; cancelled with {} not finished (rerun with --skip-existing to finish them)",
            s.not_started
        ));
    }
    text
}
