//! `diffsr::profile::StageTimes` sums the spans of `profile::time` and `profile::phase` per
//! stage and phase. In a test binary of its own: tracing caches each callsite's interest, and
//! library tests on other threads that run the same callsites with no subscriber could leave
//! them cached as "never" while this test's scoped subscriber is installed.
#![cfg(feature = "profiling")]

use std::time::Duration;

use diffsr::profile::{phase, time, Phase, Stage, StageTimes};
use tracing_subscriber::layer::SubscriberExt;

#[test]
fn spans_are_summed_per_stage_and_phase() {
    let times = StageTimes::new();
    let subscriber = tracing_subscriber::registry().with(times.layer());
    tracing::subscriber::with_default(subscriber, || {
        // Another test thread may have registered these callsites while no subscriber
        // wanted them, racing this one's registration, and left them cached as "never";
        // recomputing now that this subscriber is registered makes it see them.
        tracing::callsite::rebuild_interest_cache();
        let _phase = phase(Phase::UnetStep);
        time(Stage::Conv, || std::thread::sleep(Duration::from_millis(5)));
        time(Stage::GroupNorm, || ());
        // Spans of other targets are not counted.
        let _other = tracing::trace_span!("conv").entered();
    });
    let t = times.totals();
    assert_eq!(t[Stage::Conv as usize].calls, 1);
    assert!(t[Stage::Conv as usize].time >= Duration::from_millis(5));
    assert_eq!(t[Stage::GroupNorm as usize].calls, 1);
    assert_eq!(t[Stage::Linear as usize].calls, 0);
    let p = times.phases();
    assert_eq!(p[Phase::UnetStep as usize].calls, 1);
    assert!(p[Phase::UnetStep as usize].time >= t[Stage::Conv as usize].time);
    times.reset();
    assert!(times.totals().iter().all(|t| t.calls == 0));
}
