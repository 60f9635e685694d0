//! Batch runs of `diffsr upscale` through the real binary on the tiny x4 model: folders,
//! patterns, output templates, resuming, sharding, manifests, failures, JSON events, bad
//! arguments; and cancellation through the library's runner.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use diffsr::batch::{
    expand_inputs, plan, run_jobs, Event, JobOptions, OutputTemplate, PlanOptions, RunSettings,
    Source,
};
use diffsr::image_io::{load_rgb8, read_png_text, GenerationInfo};
use diffsr::pipeline::{DiffusionSettings, LoadOptions, UpscalePipeline};
use diffsr::scale_plan::{PlannedUpscaler, ScalePlan};

const IMAGES: [&str; 3] = [
    "astronaut-20x16.png",
    "chelsea-16x12.png",
    "coffee-18x14.png",
];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn model() -> String {
    fixtures().join("tiny-x4-upscaler").display().to_string()
}

fn scratch(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("diffsr-batch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A folder `dir/in` with the three fixture images and a file that is not an image.
fn input_folder(dir: &Path) -> Result<PathBuf> {
    let input = dir.join("in");
    std::fs::create_dir_all(&input)?;
    for name in IMAGES {
        std::fs::copy(fixtures().join("images").join(name), input.join(name))?;
    }
    std::fs::write(input.join("notes.txt"), "not an image")?;
    Ok(input)
}

/// `diffsr upscale` on the tiny model with one step, plus `args`.
fn upscale(args: &[&str]) -> Result<Output> {
    let model = model();
    let mut all = vec!["upscale", "--model", &model, "--steps", "1"];
    all.extend_from_slice(args);
    Ok(Command::new(env!("CARGO_BIN_EXE_diffsr"))
        .args(&all)
        .output()?)
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn files(dir: &Path) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        names.insert(entry?.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn json_events(out: &Output) -> Result<Vec<serde_json::Value>> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

fn generation_info(path: &Path) -> Result<GenerationInfo> {
    GenerationInfo::from_texts(path, &read_png_text(path)?)?
        .ok_or_else(|| anyhow::anyhow!("{} has no parameters", path.display()))
}

#[test]
fn a_folder_goes_to_out_dir_named_by_the_template() -> Result<()> {
    let dir = scratch("folder")?;
    let input = input_folder(&dir)?;
    let out_dir = dir.join("out");
    // No --seed: one random seed for the run, printed and stored in every output.
    let out = upscale(&[
        s(&input),
        "--out-dir",
        s(&out_dir),
        "--name",
        "{index}-{stem}.{ext}",
    ])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        files(&out_dir)?,
        set(&[
            "0-astronaut-20x16.png",
            "1-chelsea-16x12.png",
            "2-coffee-18x14.png"
        ])
    );
    let printed: u64 = stderr(&out)
        .lines()
        .find_map(|l| l.strip_prefix("seed ").and_then(|s| s.trim().parse().ok()))
        .expect("the seed is printed");
    for name in files(&out_dir)? {
        assert_eq!(generation_info(&out_dir.join(&name))?.seed, printed);
    }
    let written = load_rgb8(&out_dir.join("1-chelsea-16x12.png"))?;
    assert_eq!((written.width, written.height), (64, 48));
    // The default name.
    let out_dir = dir.join("default");
    let out = upscale(&[s(&input), "--out-dir", s(&out_dir), "--seed", "1"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out_dir.join("coffee-18x14-x4.png").is_file());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn recursive_folders_and_glob_patterns() -> Result<()> {
    let dir = scratch("recursive")?;
    let input = input_folder(&dir)?;
    std::fs::create_dir_all(input.join("sub"))?;
    std::fs::rename(input.join(IMAGES[2]), input.join("sub").join(IMAGES[2]))?;
    let out_dir = dir.join("flat");
    let out = upscale(&[s(&input), "--out-dir", s(&out_dir), "--seed", "1"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        files(&out_dir)?,
        set(&["astronaut-20x16-x4.png", "chelsea-16x12-x4.png"])
    );
    let out_dir = dir.join("tree");
    let name = "{dir}/{stem}.png";
    let out = upscale(&[
        s(&input),
        "-r",
        "--out-dir",
        s(&out_dir),
        "--name",
        name,
        "--seed",
        "1",
    ])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        files(&out_dir)?,
        set(&["astronaut-20x16.png", "chelsea-16x12.png", "sub"])
    );
    assert!(out_dir.join("sub/coffee-18x14.png").is_file());
    // A pattern (unexpanded, as a quoted shell argument arrives).
    let out_dir = dir.join("glob");
    let pattern = format!("{}/c*.png", input.display());
    let out = upscale(&[&pattern, "--out-dir", s(&out_dir), "--seed", "1"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(files(&out_dir)?, set(&["chelsea-16x12-x4.png"]));
    let pattern = format!("{}/*.gif", input.display());
    let out = upscale(&[&pattern, "--out-dir", s(&out_dir)])?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("matches no image"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn skip_existing_resumes_without_touching_finished_outputs() -> Result<()> {
    let dir = scratch("resume")?;
    let input = input_folder(&dir)?;
    let out_dir = dir.join("out");
    let args = [s(&input), "--out-dir", s(&out_dir), "--seed", "3"];
    let out = upscale(&args)?;
    assert!(out.status.success(), "{}", stderr(&out));
    let mtime = |name: &str| std::fs::metadata(out_dir.join(name)).and_then(|m| m.modified());
    let before = (
        mtime("astronaut-20x16-x4.png")?,
        mtime("coffee-18x14-x4.png")?,
    );
    std::fs::remove_file(out_dir.join("chelsea-16x12-x4.png"))?;
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut resume = args.to_vec();
    resume.extend(["--skip-existing", "--json"]);
    let out = upscale(&resume)?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out_dir.join("chelsea-16x12-x4.png").is_file());
    assert_eq!(
        before,
        (
            mtime("astronaut-20x16-x4.png")?,
            mtime("coffee-18x14-x4.png")?
        )
    );
    let events = json_events(&out)?;
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(
        (summary["done"].as_u64(), summary["skipped"].as_u64()),
        (Some(1), Some(2))
    );
    // All done: nothing to run, no model needed.
    let out = upscale(&resume)?;
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn shards_split_the_jobs_exactly_once() -> Result<()> {
    let dir = scratch("shards")?;
    let input = input_folder(&dir)?;
    let out_dir = dir.join("out");
    let mut done = Vec::new();
    for shard in ["0/2", "1/2"] {
        let out = upscale(&[
            s(&input),
            "--out-dir",
            s(&out_dir),
            "--shard",
            shard,
            "--json",
        ])?;
        assert!(out.status.success(), "{}", stderr(&out));
        for e in json_events(&out)? {
            if e["event"] == "done" {
                done.push(e["index"].as_u64().unwrap());
            }
        }
    }
    done.sort();
    assert_eq!(done, [0, 1, 2]);
    assert_eq!(files(&out_dir)?.len(), 3);
    for bad in ["3/2", "2/2", "0/0", "a/b", "1"] {
        let out = upscale(&[s(&input), "--out-dir", s(&out_dir), "--shard", bad])?;
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains("--shard"), "{bad}: {}", stderr(&out));
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_manifest_gives_each_job_its_own_options() -> Result<()> {
    let dir = scratch("manifest")?;
    let input = input_folder(&dir)?;
    let manifest = dir.join("jobs.jsonl");
    std::fs::write(
        &manifest,
        "# two jobs, paths relative to this file\n\
         {\"input\": \"in/astronaut-20x16.png\", \"output\": \"a.png\", \"prompt\": \"an astronaut\", \"seed\": 7}\n\
         \n\
         {\"input\": \"in/chelsea-16x12.png\", \"prompt\": \"a cat\", \"seed\": 8, \"steps\": 2, \"scheduler\": \"euler\"}\n",
    )?;
    let out_dir = dir.join("out");
    let out = upscale(&[
        "--manifest",
        s(&manifest),
        "--out-dir",
        s(&out_dir),
        "--name",
        "{stem}-{seed}-{scheduler}-{steps}.png",
    ])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let a = generation_info(&dir.join("a.png"))?;
    assert_eq!((a.prompt.as_str(), a.seed, a.steps), ("an astronaut", 7, 1));
    let b = generation_info(&out_dir.join("chelsea-16x12-8-euler-2.png"))?;
    assert_eq!((b.prompt.as_str(), b.seed, b.steps), ("a cat", 8, 2));
    // The same job as a single-image run gives the same pixels.
    let single = dir.join("single.png");
    let out = upscale(&[
        s(&input.join("astronaut-20x16.png")),
        "-o",
        s(&single),
        "--prompt",
        "an astronaut",
        "--seed",
        "7",
    ])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        load_rgb8(&single)?.data,
        load_rgb8(&dir.join("a.png"))?.data
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_malformed_manifest_line_is_named_before_anything_runs() -> Result<()> {
    let dir = scratch("bad-manifest")?;
    input_folder(&dir)?;
    let out_dir = dir.join("out");
    let manifest = dir.join("jobs.jsonl");
    std::fs::write(
        &manifest,
        "{\"input\": \"in/astronaut-20x16.png\"}\n# fine\n{\"input\": \"in/chelsea-16x12.png\", \"seed\": \"x\"}\n",
    )?;
    let out = upscale(&["--manifest", s(&manifest), "--out-dir", s(&out_dir)])?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("jobs.jsonl") && stderr(&out).contains("line 3"),
        "{}",
        stderr(&out)
    );
    assert!(!out_dir.exists(), "a job ran");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn one_bad_input_fails_and_the_others_finish() -> Result<()> {
    let dir = scratch("one-bad")?;
    let input = input_folder(&dir)?;
    std::fs::write(input.join("broken.png"), "not a png")?;
    let out_dir = dir.join("out");
    let out = upscale(&[s(&input), "--out-dir", s(&out_dir), "--json"])?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 failed"), "{}", stderr(&out));
    assert!(stderr(&out).contains("broken.png"), "{}", stderr(&out));
    assert_eq!(files(&out_dir)?.len(), 3);
    let events = json_events(&out)?;
    let kinds: BTreeSet<String> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        kinds,
        set(&["done", "failed", "started", "step", "summary"])
    );
    let summary = events.last().unwrap();
    assert_eq!(
        (summary["done"].as_u64(), summary["failed"].as_u64()),
        (Some(3), Some(1))
    );
    assert!(summary["failures"][0]["input"]
        .as_str()
        .unwrap()
        .ends_with("broken.png"));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn conflicting_flags_are_argument_errors() -> Result<()> {
    let dir = scratch("conflicts")?;
    let input = input_folder(&dir)?;
    let a = input.join(IMAGES[0]);
    let b = input.join(IMAGES[1]);
    let out_png = dir.join("out.png");
    let manifest = dir.join("jobs.jsonl");
    std::fs::write(&manifest, "{\"input\": \"in/astronaut-20x16.png\"}\n")?;
    // Same stem in two folders, one output name.
    let other = dir.join("other");
    std::fs::create_dir_all(&other)?;
    std::fs::copy(&a, other.join(IMAGES[0]))?;
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![s(&a), s(&b), "-o", s(&out_png)], "-o"),
        (vec![s(&input), "-o", s(&out_png)], "-o"),
        (
            vec![s(&a), "--manifest", s(&manifest), "--out-dir", s(&dir)],
            "--manifest",
        ),
        (
            vec![s(&a), "-o", s(&out_png), "--out-dir", s(&dir)],
            "--out-dir",
        ),
        (vec![s(&a), s(&b)], "--out-dir"),
        (
            vec![s(&a), s(&b), "--out-dir", s(&dir), "--name", "{stme}.png"],
            "{stme}",
        ),
        (vec![s(&a), s(&other), "--out-dir", s(&dir)], "both"),
    ];
    for (args, expected) in cases {
        let out = upscale(&args)?;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(!out_png.exists());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn cancelling_stops_at_a_step_and_keeps_finished_outputs() -> Result<()> {
    let dir = scratch("cancel")?;
    let input = input_folder(&dir)?;
    let out_dir = dir.join("out");
    let pipeline = UpscalePipeline::load(
        &fixtures().join("tiny-x4-upscaler"),
        &LoadOptions::default(),
    )?;
    let defaults = JobOptions {
        diffusion: DiffusionSettings {
            steps: 3,
            seed: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let template = OutputTemplate::parse("{stem}.png")?;
    let plan = plan(
        &Source::Inputs(expand_inputs(&[input], false)?),
        &PlanOptions {
            defaults: &defaults,
            output: None,
            out_dir: Some(&out_dir),
            template: &template,
            scale: pipeline.scale(),
            shard: None,
            skip_existing: false,
        },
    )?;
    assert_eq!(plan.jobs.len(), 3);
    let settings = RunSettings {
        format: None,
        quality: 95,
        model: "tiny".into(),
        revision: None,
    };
    let cancel = AtomicBool::new(false);
    let mut steps_of_second = 0;
    let planned = PlannedUpscaler::new(&pipeline, None, ScalePlan::Auto);
    let summary = run_jobs(&planned, &plan, &settings, &cancel, &mut |e| {
        // Ctrl-C during the second image, after its first step.
        if let Event::Step { index: 1, .. } = e {
            steps_of_second += 1;
            cancel.store(true, Ordering::SeqCst);
        }
    });
    assert!(summary.cancelled);
    assert_eq!(
        (summary.done, summary.failed, summary.not_started),
        (1, 0, 2)
    );
    assert_eq!(steps_of_second, 1, "the run went past the step boundary");
    // The finished output is whole; nothing of the interrupted one, not even a temporary file.
    assert_eq!(files(&out_dir)?, set(&["astronaut-20x16.png"]));
    assert_eq!(load_rgb8(&out_dir.join("astronaut-20x16.png"))?.width, 80);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
