//! The fuzz loop: inputs drawn from a target's proptest strategy with a fixed seed, each run
//! under `catch_unwind` with the allocation cap of [`super::alloc`] armed, and every input that
//! breaks the invariant saved to `target/fuzz-failures/<target>-<hash>.bin` (with a `.txt`
//! saying why) so it can become a regression input under `tests/fixtures/fuzz/`.
//!
//! The invariant: no panic, no abort, no single allocation over the target's cap (by default
//! 64 MiB + 16 bytes per input byte), and a refusal is an error with a non-empty message. Raw
//! control characters and very long messages are counted as warnings (escaping is another
//! class of the issue), and the library's own `catch_unwind`s are reported as notes.
//!
//! Settings, read here in the tests only (see docs/fuzzing.md): `DIFFSR_FUZZ_CASES` (cases per
//! target), `DIFFSR_FUZZ_SECONDS` (time per target; with it and no case count, cases run until
//! the time is up), `DIFFSR_FUZZ_SEED` (varies every target's inputs).

use std::collections::BTreeMap;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use proptest::strategy::{BoxedStrategy, Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use super::alloc;
use super::crc::fnv1a;

/// The seed of CI runs.
const DEFAULT_SEED: u64 = 0x6469_6666_7372_0014;
/// A case running longer is a hang: its input is saved and the process aborts.
const HANG_AFTER: Duration = Duration::from_secs(120);
/// A case running longer is reported as slow.
const SLOW_AFTER: Duration = Duration::from_secs(5);
/// A refusal longer than this (in bytes) is reported as a warning.
const LONG_MESSAGE: usize = 2000;
/// Requests over this are refused for [`Memory::Input`] targets (an abort where not fallible).
const REFUSE_ABOVE: usize = 1 << 30;

/// The memory a case may use.
#[derive(Debug, Clone, Copy)]
pub enum Memory {
    /// One allocation at most 64 MiB + 16 bytes per input byte.
    Input,
    /// One allocation at most this many bytes (a documented limit, such as the image decoder's).
    Limit(usize),
}

impl Memory {
    /// (cap, refuse above) for an input of `len` bytes.
    fn caps(self, len: usize) -> (usize, usize) {
        match self {
            Self::Input => {
                let cap = (64 << 20) + 16 * len;
                (cap, REFUSE_ABOVE.max(cap))
            }
            Self::Limit(n) => (n, n.saturating_mul(2)),
        }
    }
}

/// What a target does with an input: `Ok` when the library accepted it, `Err(message)` when it
/// refused it with that message. A failed post-condition is a panic.
pub type Run = Box<dyn Fn(&[u8], &Path) -> Result<(), String>>;

/// One fuzz target.
pub struct Target {
    /// The test's name, and the prefix of its failure files and regression inputs.
    pub name: &'static str,
    /// Cases in CI, when `DIFFSR_FUZZ_CASES` does not say.
    pub cases: u32,
    pub memory: Memory,
    /// The inputs: mutated seeds.
    pub inputs: BoxedStrategy<Vec<u8>>,
    /// Runs one input; the path is an empty scratch folder of its own.
    pub run: Run,
}

/// How one case went.
#[derive(Debug)]
pub enum Verdict {
    Accepted,
    Refused(String),
    /// The invariant broke: why.
    Failed(String),
}

/// The case running now, for the allocator's and the watchdog's reports.
struct Running {
    target: &'static str,
    input: Vec<u8>,
    started: Instant,
}

static CURRENT: Mutex<Option<Running>> = Mutex::new(None);
/// Whether a case is running (read by the panic hook without locking).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Panics seen during the current case, the library's caught ones included.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Targets run one at a time: the cap and the panic log are process-wide.
static SERIAL: Mutex<()> = Mutex::new(());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fuzz settings of this run.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub cases: Option<u64>,
    pub seconds: Option<u64>,
    pub seed: u64,
}

impl Settings {
    pub fn from_env() -> Self {
        let number = |name: &str| {
            std::env::var(name).ok().map(|v| {
                let v = v.trim();
                let parsed = match v.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => v.parse(),
                };
                parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number"))
            })
        };
        Self {
            cases: number("DIFFSR_FUZZ_CASES"),
            seconds: number("DIFFSR_FUZZ_SECONDS"),
            seed: number("DIFFSR_FUZZ_SEED").unwrap_or(DEFAULT_SEED),
        }
    }

    /// The ChaCha seed of `target`'s run.
    fn rng_seed(&self, target: &str) -> [u8; 32] {
        let mut state = self.seed ^ fnv1a(target.as_bytes());
        let mut seed = [0u8; 32];
        for chunk in seed.chunks_mut(8) {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        seed
    }
}

/// Where failing inputs are written: `target/fuzz-failures/`.
pub fn failures_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap_or(Path::new("target"))
        .join("fuzz-failures")
}

/// Writes a failing input and why it failed; the path of the input.
pub fn save_failure(target: &str, input: &[u8], reason: &str) -> PathBuf {
    let dir = failures_dir();
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{target}-{:016x}.bin", fnv1a(input)));
    let _ = std::fs::write(&path, input);
    let _ = std::fs::write(path.with_extension("txt"), format!("{target}: {reason}\n"));
    path
}

/// Writes to the real stderr, past the test harness's capture (which an abort would lose).
fn shout(message: &str) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// Called by the allocator on the first request over the cap in a case.
pub fn on_oversize(size: usize, refused: bool) {
    let current = lock(&CURRENT);
    if let Some(run) = current.as_ref() {
        let reason = format!(
            "allocation of {size} bytes for an input of {} bytes{}",
            run.input.len(),
            if refused {
                " (refused: an abort unless the caller handles it)"
            } else {
                ""
            }
        );
        let path = save_failure(run.target, &run.input, &reason);
        shout(&format!(
            "fuzz {}: {reason}; input saved to {}",
            run.target,
            path.display()
        ));
    }
}

/// The panic hook and the hang watchdog, installed once.
fn install_hooks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if ACTIVE.load(Ordering::SeqCst) {
                lock(&PANICS).push(info.to_string());
            } else {
                default(info);
            }
        }));
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_secs(1));
            let current = lock(&CURRENT);
            if let Some(run) = current.as_ref() {
                if run.started.elapsed() > HANG_AFTER {
                    let reason = format!("hang: still running after {HANG_AFTER:?}");
                    let path = save_failure(run.target, &run.input, &reason);
                    shout(&format!(
                        "fuzz {}: {reason}; input saved to {}; aborting",
                        run.target,
                        path.display()
                    ));
                    std::process::abort();
                }
            }
        });
    });
}

/// A fresh, empty scratch folder for one case.
fn fresh_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)
}

/// Runs one case of `target` in `scratch`; `notes` collects what is worth reporting without
/// failing.
fn run_case(target: &Target, input: &[u8], scratch: &Path, notes: &mut Notes) -> Verdict {
    fresh_dir(scratch).expect("scratch folder");
    lock(&PANICS).clear();
    *lock(&CURRENT) = Some(Running {
        target: target.name,
        input: input.to_vec(),
        started: Instant::now(),
    });
    ACTIVE.store(true, Ordering::SeqCst);
    let (cap, refuse) = target.memory.caps(input.len());
    let started = Instant::now();
    alloc::arm(cap, refuse);
    let result = catch_unwind(AssertUnwindSafe(|| (target.run)(input, scratch)));
    let over = alloc::disarm();
    let elapsed = started.elapsed();
    ACTIVE.store(false, Ordering::SeqCst);
    *lock(&CURRENT) = None;
    let panics = std::mem::take(&mut *lock(&PANICS));

    notes.slowest = notes.slowest.max(elapsed);
    if elapsed > SLOW_AFTER {
        notes.add(format!("slow case (over {SLOW_AFTER:?})"));
    }
    let escaped = result.is_err();
    // Panics the library caught itself (it turned them into errors): worth knowing.
    for p in &panics[..panics.len() - usize::from(escaped && !panics.is_empty())] {
        notes.add(format!(
            "panic caught inside the library: {}",
            first_line(p)
        ));
    }
    match result {
        Err(_) => Verdict::Failed(format!(
            "panic: {}",
            panics.last().map_or("(no message)", |p| p.as_str())
        )),
        Ok(_) if over.is_some() => Verdict::Failed(format!(
            "allocation of {} bytes for an input of {} bytes (cap {cap})",
            over.unwrap_or_default(),
            input.len()
        )),
        Ok(Ok(())) => Verdict::Accepted,
        Ok(Err(message)) if message.trim().is_empty() => {
            Verdict::Failed("refused with an empty message".into())
        }
        Ok(Err(message)) => {
            if message.chars().any(is_raw_control) {
                notes.add(format!(
                    "raw control character in a message: {}",
                    message_kind(&message)
                ));
            }
            if message.len() > LONG_MESSAGE {
                notes.add(format!(
                    "message of over {LONG_MESSAGE} bytes: {}",
                    message_kind(&message)
                ));
            }
            Verdict::Refused(message)
        }
    }
}

/// A character a terminal acts on (not newline or tab).
pub fn is_raw_control(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

fn first_line(s: &str) -> String {
    let line: String = s.lines().take(2).collect::<Vec<_>>().join(" | ");
    line.chars().take(200).collect()
}

/// Counted remarks (notes and warnings) of a run, and its slowest case.
#[derive(Default)]
struct Notes {
    counts: BTreeMap<String, usize>,
    slowest: Duration,
}

impl Notes {
    fn add(&mut self, note: String) {
        *self.counts.entry(note).or_default() += 1;
    }
}

/// Runs `input` once as a case of `target` (a regression input).
pub fn replay(target: &Target, input: &[u8]) -> Verdict {
    let _serial = lock(&SERIAL);
    install_hooks();
    let scratch = scratch_root(target.name);
    let verdict = run_case(target, input, &scratch, &mut Notes::default());
    let _ = std::fs::remove_dir_all(&scratch);
    verdict
}

fn scratch_root(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-{name}-{}", std::process::id()))
}

/// Draws the inputs of one case (for tests that run them differently, as a subprocess).
pub fn inputs(name: &str, strategy: &BoxedStrategy<Vec<u8>>, count: u64) -> Vec<Vec<u8>> {
    let settings = Settings::from_env();
    let mut runner = runner(&settings, name);
    (0..count)
        .map(|_| strategy.new_tree(&mut runner).expect("an input").current())
        .collect()
}

fn runner(settings: &Settings, name: &str) -> TestRunner {
    let config = Config {
        rng_algorithm: RngAlgorithm::ChaCha,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &settings.rng_seed(name)),
    )
}

/// Fuzzes `target`: its case count (or the environment's) with the run's seed; panics at the
/// end, listing the saved inputs, when any case broke the invariant.
pub fn fuzz(target: Target) {
    let _serial = lock(&SERIAL);
    install_hooks();
    let settings = Settings::from_env();
    let cases = match (settings.cases, settings.seconds) {
        (Some(n), _) => n,
        (None, Some(_)) => u64::MAX,
        (None, None) => u64::from(target.cases),
    };
    let deadline = settings
        .seconds
        .map(|s| Instant::now() + Duration::from_secs(s));
    let mut runner = runner(&settings, target.name);
    let scratch = scratch_root(target.name);
    let mut notes = Notes::default();
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures: BTreeMap<String, (usize, PathBuf)> = BTreeMap::new();
    let (mut run, mut accepted) = (0u64, 0u64);
    let started = Instant::now();
    while run < cases && deadline.is_none_or(|d| Instant::now() < d) {
        // A mutator that panics is a bug of the harness: counted as a failure, and the run goes
        // on (a long run is not lost to it).
        let drawn = catch_unwind(AssertUnwindSafe(|| {
            target
                .inputs
                .new_tree(&mut runner)
                .expect("an input")
                .current()
        }));
        run += 1;
        let Ok(input) = drawn else {
            let entry = failures
                .entry("a mutator panicked (a bug in tests/fuzz_support)".into())
                .or_insert((0, PathBuf::new()));
            entry.0 += 1;
            continue;
        };
        match run_case(&target, &input, &scratch, &mut notes) {
            Verdict::Accepted => accepted += 1,
            Verdict::Refused(message) => {
                *refusals.entry(message_kind(&message)).or_default() += 1;
            }
            Verdict::Failed(reason) => {
                let path = save_failure(target.name, &input, &reason);
                let entry = failures
                    .entry(failure_kind(&reason))
                    .or_insert((0, path.clone()));
                entry.0 += 1;
                shout(&format!(
                    "fuzz {}: case {run}: {}; input saved to {}",
                    target.name,
                    first_line(&reason),
                    path.display()
                ));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);

    println!(
        "fuzz {}: {run} cases in {:.1?} (seed {:#x}, slowest {:.1?}): {accepted} accepted, {} \
         refused, {} failed",
        target.name,
        started.elapsed(),
        settings.seed,
        notes.slowest,
        refusals.values().sum::<usize>(),
        failures.values().map(|f| f.0).sum::<usize>()
    );
    let mut kinds: Vec<_> = refusals.into_iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    for (kind, n) in kinds.iter().take(12) {
        println!("  refused {n:>5}x  {kind}");
    }
    let mut remarks: Vec<_> = notes.counts.into_iter().collect();
    remarks.sort_by_key(|k| std::cmp::Reverse(k.1));
    for (note, n) in remarks.iter().take(12) {
        println!("  note    {n:>5}x  {note}");
    }
    if remarks.len() > 12 {
        println!(
            "  note           ({} more kinds of notes)",
            remarks.len() - 12
        );
    }
    if !failures.is_empty() {
        let list: Vec<String> = failures
            .iter()
            .map(|(kind, (n, path))| format!("  {n}x {kind}\n     e.g. {}", path.display()))
            .collect();
        panic!(
            "fuzz {}: {} kinds of invariant failures:\n{}",
            target.name,
            failures.len(),
            list.join("\n")
        );
    }
}

/// A refusal's message with its file paths and numbers blurred, to count kinds of messages.
fn message_kind(message: &str) -> String {
    let mut out = String::new();
    let mut last_digit = false;
    for c in message.chars().take(110) {
        if is_raw_control(c) {
            out.push('?');
            last_digit = false;
        } else if c.is_ascii_digit() {
            if !last_digit {
                out.push('N');
            }
            last_digit = true;
        } else {
            out.push(c);
            last_digit = false;
        }
    }
    // The scratch folder's path is the same in every case but long: drop it.
    match out.find("fuzz-") {
        Some(at) => {
            let end = out[at..].find(['/', ' ']).map_or(out.len(), |e| at + e);
            format!("{}…{}", &out[..at], &out[end..])
        }
        None => out,
    }
}

/// A failure's kind: a panic's location, or the reason without its numbers.
fn failure_kind(reason: &str) -> String {
    if let Some(rest) = reason.strip_prefix("panic: ") {
        return format!("panic {}", first_line(rest));
    }
    message_kind(reason)
}

#[test]
fn the_harness_sees_each_kind_of_failure() {
    let target = |run: Run| Target {
        name: "selftest",
        cases: 1,
        memory: Memory::Input,
        inputs: proptest::strategy::Just(Vec::new()).boxed(),
        run,
    };
    let verdict = |run: Run| replay(&target(run), b"input");
    assert!(matches!(
        verdict(Box::new(|_, _| Ok(()))),
        Verdict::Accepted
    ));
    assert!(matches!(
        verdict(Box::new(|_, _| Err("bad".into()))),
        Verdict::Refused(m) if m == "bad"
    ));
    assert!(matches!(
        verdict(Box::new(|_, _| Err(" ".into()))),
        Verdict::Failed(m) if m.contains("empty message")
    ));
    assert!(matches!(
        verdict(Box::new(|_, _| panic!("boom"))),
        Verdict::Failed(m) if m.contains("boom")
    ));
    // 128 MiB for a 5-byte input: over the cap, served (below the refusal limit), reported.
    assert!(matches!(
        verdict(Box::new(|_, _| {
            let v: Vec<u8> = Vec::with_capacity(128 << 20);
            drop(v);
            Ok(())
        })),
        Verdict::Failed(m) if m.contains("allocation of 134217728 bytes")
    ));
    let _ =
        std::fs::remove_file(failures_dir().join(format!("selftest-{:016x}.bin", fnv1a(b"input"))));
    let _ =
        std::fs::remove_file(failures_dir().join(format!("selftest-{:016x}.txt", fnv1a(b"input"))));
}
