//! The study's findings F1–F7 as tests over a grid's tables, decided with the statistics of
//! [`super::statistics`]: per-seed thresholds for collapse and separation, paired t intervals
//! against a minimum effect for the probe. Each claim's parts were stated before the grid it
//! reads was run.

use std::collections::BTreeMap;

pub use super::statistics::ClaimVerdict;
use super::statistics::{comparison, not_measured, threshold, Direction, Part};
use super::tables::GridTables;
use crate::config::BASELINE_VARIANT;
use crate::log::{Status, SummaryRecord};

/// Cosines above this mean "all embeddings point the same way" (the study's 0.9999 at scale):
/// the verdict's threshold, defined once.
const COLLAPSED: f64 = crate::metrics::verdict::COSINE_THRESHOLD;
/// pos − neg above this separates positives from negatives (../shared/science.md).
const SEPARATED: f64 = 0.3;
/// The smallest probe-accuracy difference that counts as "above" (3 points): below the
/// seed-to-seed spread of one variant, above the cross-validated probe's standard error.
pub const PROBE_MIN_EFFECT: f64 = 0.03;
/// F6: "collapsed early" is a first-half epoch gap below this, "then separates" a last-epoch
/// gap larger by more than [`F6_RECOVERY`].
const F6_EARLY_GAP: f64 = 0.05;
const F6_RECOVERY: f64 = 0.1;

const COLLAPSE_TEST: &str = "per seed: pos and neg cosine > 0.99";
const NOT_COLLAPSE_TEST: &str = "per seed: not (pos and neg cosine > 0.99)";
const SEPARATION_TEST: &str = "per seed: pos − neg > 0.3";
const F6_TEST: &str = "per seed: some first-half epoch gap < 0.05, last-epoch gap larger by > 0.1";

#[derive(Debug, Clone)]
pub struct Claim {
    pub claim_id: &'static str,
    pub statement: &'static str,
    pub measured: String,
    pub verdict: ClaimVerdict,
    /// Every part that was decided, in the order the statement names them.
    pub parts: Vec<Part>,
}

impl Claim {
    fn new(
        claim_id: &'static str,
        statement: &'static str,
        context: String,
        parts: Vec<Part>,
    ) -> Self {
        let verdict = ClaimVerdict::combine(parts.iter().map(|p| p.verdict));
        Self::with_verdict(claim_id, statement, context, parts, verdict)
    }

    fn with_verdict(
        claim_id: &'static str,
        statement: &'static str,
        context: String,
        parts: Vec<Part>,
        verdict: ClaimVerdict,
    ) -> Self {
        let mut measured: Vec<String> = parts.iter().map(describe).collect();
        if !context.is_empty() {
            measured.push(context);
        }
        Self {
            claim_id,
            statement,
            measured: measured.join("; "),
            verdict,
            parts,
        }
    }

    /// The part that decided the verdict: the first whose verdict is the claim's.
    pub fn decisive(&self) -> Option<&Part> {
        self.parts
            .iter()
            .find(|p| p.verdict == self.verdict)
            .or(self.parts.first())
    }
}

/// One part in words: "probe: byol − random +12.3 points, 95 % CI [9.8, 14.8] (5 seeds):
/// holds".
pub fn describe(p: &Part) -> String {
    let verdict = p.verdict.as_str();
    match (p.effect, p.low, p.high) {
        _ if p.verdict == ClaimVerdict::NotMeasured => format!("{}: not measured", p.label),
        (Some(e), Some(lo), Some(hi)) => format!(
            "{} {:+.1} points, 95 % CI [{:+.1}, {:+.1}] ({} seeds, minimum {:.0}): {verdict}",
            p.label,
            100.0 * e,
            100.0 * lo,
            100.0 * hi,
            p.seeds,
            100.0 * p.min_effect
        ),
        (Some(share), None, None) if p.test != super::statistics::PAIRED_T => format!(
            "{}: {} of {} seeds: {verdict}",
            p.label,
            (share * p.seeds as f64).round() as usize,
            p.seeds
        ),
        (Some(e), _, _) => format!(
            "{} {:+.1} points ({} seed): {verdict}",
            p.label,
            100.0 * e,
            p.seeds
        ),
        _ => format!("{}: no seeds: {verdict}", p.label),
    }
}

/// A variant's ok runs.
fn ok_runs<'a>(
    t: &'a GridTables,
    variant: &'a str,
) -> impl Iterator<Item = &'a SummaryRecord> + 'a {
    t.runs_of(variant)
        .filter(|r| r.outcome.status == Status::Ok)
}

/// seed → value of one final metric over a variant's ok runs.
fn per_seed(
    t: &GridTables,
    variant: &str,
    metric: fn(&SummaryRecord) -> Option<f64>,
) -> BTreeMap<u64, f64> {
    ok_runs(t, variant)
        .filter_map(|r| metric(r).filter(|v| v.is_finite()).map(|v| (r.seed, v)))
        .collect()
}

fn probe(r: &SummaryRecord) -> Option<f64> {
    r.outcome.final_probe_acc
}

fn knn(r: &SummaryRecord) -> Option<f64> {
    r.outcome.final_knn_acc
}

fn has(t: &GridTables, variant: &str) -> bool {
    ok_runs(t, variant).next().is_some()
}

/// Per seed: whether a run's final cosines meet `test`.
fn cosines_meet(t: &GridTables, variant: &str, test: fn(f64, f64) -> bool) -> Vec<bool> {
    ok_runs(t, variant)
        .filter_map(|r| Some(test(r.outcome.final_pos_cos?, r.outcome.final_neg_cos?)))
        .collect()
}

fn is_collapsed(pos: f64, neg: f64) -> bool {
    pos > COLLAPSED && neg > COLLAPSED
}

fn is_separated(pos: f64, neg: f64) -> bool {
    pos - neg > SEPARATED
}

/// A per-seed threshold on a variant's final cosines: "{variant} {what}", met by `test`.
fn cosine_part(
    t: &GridTables,
    variant: &str,
    what: &str,
    rule: &str,
    test: fn(f64, f64) -> bool,
) -> Part {
    let label = format!("{variant} {what}");
    if !has(t, variant) {
        return not_measured(label, rule);
    }
    threshold(label, rule, &cosines_meet(t, variant, test))
}

fn collapse_part(t: &GridTables, variant: &str) -> Part {
    cosine_part(t, variant, "collapsed", COLLAPSE_TEST, is_collapsed)
}

fn not_collapsed_part(t: &GridTables, variant: &str) -> Part {
    cosine_part(t, variant, "not collapsed", NOT_COLLAPSE_TEST, |p, n| {
        !is_collapsed(p, n)
    })
}

fn separation_part(t: &GridTables, variant: &str) -> Part {
    cosine_part(t, variant, "separated", SEPARATION_TEST, is_separated)
}

/// Probe accuracy of `a` against `b`, paired by seed.
fn probe_part(t: &GridTables, a: &str, b: &str, direction: Direction) -> Part {
    let label = format!("probe: {a} − {b}");
    if !has(t, a) || !has(t, b) {
        return not_measured(label, super::statistics::PAIRED_T);
    }
    comparison(
        label,
        &per_seed(t, a, probe),
        &per_seed(t, b, probe),
        PROBE_MIN_EFFECT,
        direction,
    )
}

/// Means over seeds of the final cosines and kNN of a variant, for the claim's text.
fn context(t: &GridTables, variant: &str) -> String {
    let mean = |m: fn(&SummaryRecord) -> Option<f64>| {
        let v = per_seed(t, variant, m);
        (!v.is_empty()).then(|| v.values().sum::<f64>() / v.len() as f64)
    };
    match (
        mean(|r| r.outcome.final_pos_cos),
        mean(|r| r.outcome.final_neg_cos),
    ) {
        (Some(p), Some(n)) => {
            let mut s = format!("{variant} mean pos {p:.3}, neg {n:.3}");
            if let Some(k) = knn_context(t, variant) {
                s += &format!(", {k}");
            }
            s
        }
        _ => String::new(),
    }
}

/// kNN against the untrained baseline (paired), reported beside the probe.
fn knn_context(t: &GridTables, variant: &str) -> Option<String> {
    let (a, b) = (
        per_seed(t, variant, knn),
        per_seed(t, BASELINE_VARIANT, knn),
    );
    let i = super::statistics::t_interval(&super::statistics::paired_differences(&a, &b))?;
    Some(format!(
        "kNN − random {:+.1} points [{:+.1}, {:+.1}]",
        100.0 * i.effect,
        100.0 * i.low,
        100.0 * i.high
    ))
}

/// The study's claims F1–F7, then the mechanism claims M1–M4 when the grid trained any of
/// the variants they read (a grid without them, such as the default, reports F1–F7 only).
pub fn evaluate_claims(t: &GridTables) -> Vec<Claim> {
    let mut claims: Vec<Claim> = [f1, f2, f3, f4, f5, f6, f7]
        .iter()
        .map(|claim| claim(t))
        .collect();
    if MECHANISM_VARIANTS
        .iter()
        .any(|v| t.runs_of(v).next().is_some())
    {
        claims.extend([m1, m2, m3, m4].iter().map(|claim| claim(t)));
    }
    claims
}

/// The variants of the mechanism claims: batch norm taken apart in both heads
/// (experiments/bn-mechanism.toml).
pub const MECHANISM_VARIANTS: [&str; 4] = ["bn-center", "bn-scale", "bn-detached", "ghost-bn"];

/// "Prevents collapse", as F2 judges batch norm: separation on the seeds and the probe above
/// the untrained encoder's.
fn prevents_collapse(t: &GridTables, variant: &str) -> Vec<Part> {
    vec![
        separation_part(t, variant),
        probe_part(t, variant, RANDOM, Direction::Above),
    ]
}

/// "Does not prevent collapse", as F1 judges no normalization: collapsed on the seeds and the
/// probe not above the untrained encoder's.
fn does_not_prevent_collapse(t: &GridTables, variant: &str) -> Vec<Part> {
    vec![
        collapse_part(t, variant),
        probe_part(t, variant, RANDOM, Direction::NotAbove),
    ]
}

// The mechanism claims, stated (with the direction the study's explanation predicts) before
// experiments/bn-mechanism.toml was first run. The explanation: batch norm prevents collapse
// because re-centring each feature over the batch contrasts every example with the batch mean
// — through the gradient of the mean, which couples each example's update to the others'.

/// M1: centring alone prevents collapse.
fn m1(t: &GridTables) -> Claim {
    let s = "Re-centring alone (bn_center in both MLPs: subtract the batch mean, no division) prevents collapse as batch norm does (pos − neg > 0.3, probe above random by ≥ 3 points) — what the implicit-contrast explanation predicts.";
    Claim::new(
        "M1",
        s,
        context(t, "bn-center"),
        prevents_collapse(t, "bn-center"),
    )
}

/// M2: scaling alone does not.
fn m2(t: &GridTables) -> Claim {
    let s = "Scaling alone (bn_scale in both MLPs: divide by the batch standard deviation, no centring) does not prevent collapse (pos and neg cosine > 0.99, probe not above random by 3 points) — what the implicit-contrast explanation predicts.";
    Claim::new(
        "M2",
        s,
        context(t, "bn-scale"),
        does_not_prevent_collapse(t, "bn-scale"),
    )
}

/// M3: detached statistics — the explanation predicts collapse.
fn m3(t: &GridTables) -> Claim {
    let s = "With the batch statistics used in the forward pass but not differentiated through (bn_detached in both MLPs), BYOL collapses (pos and neg cosine > 0.99, probe not above random by 3 points) — what the implicit-contrast explanation predicts, since its contrast is the gradient through the batch mean.";
    Claim::new(
        "M3",
        s,
        context(t, "bn-detached"),
        does_not_prevent_collapse(t, "bn-detached"),
    )
}

/// M4: ghost batch norm over 16 examples still prevents collapse.
fn m4(t: &GridTables) -> Claim {
    let s = "Ghost batch norm (ghost_bn in both MLPs, statistics over groups of 16 examples) still prevents collapse (pos − neg > 0.3, probe above random by ≥ 3 points): the contrast needs a batch mean, not a large batch.";
    Claim::new(
        "M4",
        s,
        context(t, "ghost-bn"),
        prevents_collapse(t, "ghost-bn"),
    )
}

const RANDOM: &str = BASELINE_VARIANT;

/// F1: no normalization in the heads collapses.
fn f1(t: &GridTables) -> Claim {
    let s = "Without normalization in the projector and predictor, BYOL collapses (pos and neg cosine > 0.99) and its probe accuracy is no better than a random encoder's (not above it by 3 points).";
    Claim::new(
        "F1",
        s,
        context(t, "no-norm"),
        vec![
            collapse_part(t, "no-norm"),
            probe_part(t, "no-norm", RANDOM, Direction::NotAbove),
        ],
    )
}

/// F2: batch norm in both heads separates.
fn f2(t: &GridTables) -> Claim {
    let s = "With batch norm in both MLPs, BYOL does not collapse: positives separate from negatives (pos − neg > 0.3) and the probe beats a random encoder (by ≥ 3 points).";
    Claim::new(
        "F2",
        s,
        context(t, "byol"),
        vec![
            separation_part(t, "byol"),
            probe_part(t, "byol", RANDOM, Direction::Above),
        ],
    )
}

/// F3: layer norm does not prevent collapse.
fn f3(t: &GridTables) -> Claim {
    let s = "Layer norm in the MLPs (no batch statistics) does not prevent collapse: pos and neg cosine > 0.99.";
    Claim::new(
        "F3",
        s,
        context(t, "layer-norm"),
        vec![collapse_part(t, "layer-norm")],
    )
}

/// F4: batch norm in either head alone suffices.
fn f4(t: &GridTables) -> Claim {
    let s = "Batch norm in either MLP alone suffices (each separates, pos − neg > 0.3, and beats the random probe by ≥ 3 points), projector-only better than predictor-only (by ≥ 3 points).";
    let (a, b) = ("projector-bn", "predictor-bn");
    Claim::new(
        "F4",
        s,
        [context(t, a), context(t, b)]
            .into_iter()
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
        vec![
            separation_part(t, a),
            separation_part(t, b),
            probe_part(t, a, RANDOM, Direction::Above),
            probe_part(t, b, RANDOM, Direction::Above),
            probe_part(t, a, b, Direction::Above),
        ],
    )
}

/// F5: an explicit contrastive loss learns without normalization.
fn f5(t: &GridTables) -> Claim {
    let s = "The same network without normalization but trained with an explicit contrastive loss (InfoNCE with negatives) learns: it does not collapse and beats the random probe (by ≥ 3 points).";
    Claim::new(
        "F5",
        s,
        context(t, "contrastive"),
        vec![
            not_collapsed_part(t, "contrastive"),
            probe_part(t, "contrastive", RANDOM, Direction::Above),
        ],
    )
}

/// F6: encoder-only batch norm collapses, then separates.
fn f6(t: &GridTables) -> Claim {
    let s = "With batch norm only in the encoder, training first collapses (pos − neg < 0.05 in some epoch of the first half) and then separates (last-epoch gap larger by > 0.1).";
    let per_run: Vec<(f64, f64)> = ok_runs(t, "encoder-bn")
        .map(|r| {
            t.gap_by_epoch(&r.run_id)
                .into_values()
                .collect::<Vec<f64>>()
        })
        .filter(|g| g.len() >= 4)
        .map(|g| {
            let early = g[..g.len() / 2]
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min);
            (early, g[g.len() - 1])
        })
        .collect();
    if per_run.is_empty() {
        let label =
            "encoder-bn collapses, then separates (needs experiments/encoder-bn.toml, ≥ 4 epochs)";
        return Claim::new(
            "F6",
            s,
            String::new(),
            vec![not_measured(label.into(), F6_TEST)],
        );
    }
    let met: Vec<bool> = per_run
        .iter()
        .map(|(early, last)| *early < F6_EARLY_GAP && last - early > F6_RECOVERY)
        .collect();
    let gaps: Vec<String> = per_run
        .iter()
        .map(|(e, l)| format!("{e:.3} → {l:.3}"))
        .collect();
    Claim::new(
        "F6",
        s,
        format!(
            "smallest first-half epoch gap → last-epoch gap per seed: {}",
            gaps.join(", ")
        ),
        vec![threshold(
            "encoder-bn collapses, then separates".into(),
            F6_TEST,
            &met,
        )],
    )
}

/// F7: without batch norm, LARS or weight decay rescues SGD.
fn f7(t: &GridTables) -> Claim {
    let s = "With no batch norm anywhere, plain SGD learns nothing (probe not above random by 3 points) while LARS or stronger weight decay learns (probe above random by ≥ 3 points).";
    let sgd = probe_part(t, "sgd", RANDOM, Direction::NotAbove);
    let rescues: Vec<Part> = ["lars", "sgd-high-wd"]
        .iter()
        .filter(|v| has(t, v))
        .map(|v| probe_part(t, v, RANDOM, Direction::Above))
        .collect();
    if rescues.is_empty() {
        let label = "lars or sgd-high-wd (experiments/no-bn-optimizers.toml)";
        return Claim::new(
            "F7",
            s,
            String::new(),
            vec![sgd, not_measured(label.into(), super::statistics::PAIRED_T)],
        );
    }
    // The rescue holds when any optimizer's does; fails when every one fails.
    let rescue = if rescues.iter().any(|p| p.verdict == ClaimVerdict::Holds) {
        ClaimVerdict::Holds
    } else if rescues.iter().all(|p| p.verdict == ClaimVerdict::Fails) {
        ClaimVerdict::Fails
    } else {
        ClaimVerdict::Inconclusive
    };
    let verdict = ClaimVerdict::combine([sgd.verdict, rescue]);
    let parts = std::iter::once(sgd).chain(rescues).collect();
    Claim::with_verdict("F7", s, String::new(), parts, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::RunOutcome;

    fn run(variant: &str, seed: u64, pos: f64, neg: f64, probe: f64) -> SummaryRecord {
        SummaryRecord {
            run_id: format!("{variant}-s{seed}"),
            variant: variant.into(),
            seed,
            method: "byol".into(),
            projector_norm: "bn".into(),
            predictor_norm: Some("bn".into()),
            data: "synthetic".into(),
            outcome: RunOutcome {
                cpu: String::new(),
                status: Status::Ok,
                error: None,
                stop_reason: None,
                final_pos_cos: (variant != BASELINE_VARIANT).then_some(pos),
                final_neg_cos: (variant != BASELINE_VARIANT).then_some(neg),
                final_z_std: None,
                final_effective_rank: None,
                eval_z_effective_rank: None,
                final_knn_acc: None,
                final_probe_acc: Some(probe),
                collapse_verdict: None,
                collapse_step: None,
                steps: 0,
                wall_seconds: 0.0,
                images_per_second: 0.0,
            },
        }
    }

    fn tables(runs: Vec<SummaryRecord>) -> GridTables {
        GridTables {
            name: "t".into(),
            runs,
            steps: Default::default(),
            evals: Default::default(),
            spectra: Default::default(),
            projection_dim: Some(64),
        }
    }

    fn verdicts(t: &GridTables) -> Vec<ClaimVerdict> {
        evaluate_claims(t).iter().map(|c| c.verdict).collect()
    }

    #[test]
    fn the_study_pattern_holds_and_its_opposite_fails() {
        let mut runs = Vec::new();
        for s in 0..3 {
            let j = s as f64 * 0.005;
            runs.push(run(BASELINE_VARIANT, s, 0.0, 0.0, 0.20 + j));
            runs.push(run("no-norm", s, 0.999, 0.999, 0.20 - j));
            runs.push(run("byol", s, 0.8, 0.3 + j, 0.35 + j));
            runs.push(run("layer-norm", s, 0.995, 0.995, 0.2));
            runs.push(run("projector-bn", s, 0.85, 0.3, 0.33 + j));
            runs.push(run("predictor-bn", s, 0.9, 0.5, 0.28 + j));
            runs.push(run("contrastive", s, 0.9, 0.5, 0.30 + j));
        }
        let t = tables(runs.clone());
        let v = verdicts(&t);
        use ClaimVerdict::*;
        assert_eq!(
            v,
            [Holds, Holds, Holds, Holds, Holds, NotMeasured, NotMeasured]
        );
        let ids: Vec<_> = evaluate_claims(&t).iter().map(|c| c.claim_id).collect();
        assert_eq!(ids, ["F1", "F2", "F3", "F4", "F5", "F6", "F7"]);

        // BYOL that does not separate, a no-norm that learns, LN that does not collapse.
        for r in &mut runs {
            match r.variant.as_str() {
                "byol" => r.outcome.final_neg_cos = Some(0.7),
                "no-norm" => r.outcome.final_probe_acc = Some(0.4),
                "layer-norm" => r.outcome.final_neg_cos = Some(0.5),
                "predictor-bn" => r.outcome.final_probe_acc = Some(0.36),
                _ => {}
            }
        }
        let v = verdicts(&tables(runs));
        assert_eq!(&v[..4], [Fails, Fails, Fails, Fails]);
    }

    #[test]
    fn mechanism_claims_appear_with_their_variants_and_decide_each_direction() {
        use ClaimVerdict::*;
        let mut runs = Vec::new();
        for s in 0..3 {
            let j = s as f64 * 0.005;
            runs.push(run(BASELINE_VARIANT, s, 0.0, 0.0, 0.20 + j));
            runs.push(run("bn-center", s, 0.8, 0.3 + j, 0.35 + j));
            runs.push(run("bn-scale", s, 0.999, 0.999, 0.20 - j));
            runs.push(run("bn-detached", s, 0.995, 0.993, 0.21));
        }
        let claims = evaluate_claims(&tables(runs.clone()));
        let ids: Vec<_> = claims.iter().map(|c| c.claim_id).collect();
        assert_eq!(
            ids,
            ["F1", "F2", "F3", "F4", "F5", "F6", "F7", "M1", "M2", "M3", "M4"]
        );
        let v: Vec<_> = claims[7..].iter().map(|c| c.verdict).collect();
        assert_eq!(v, [Holds, Holds, Holds, NotMeasured]);
        // The other way round: centring that collapses, scaling that separates.
        for r in &mut runs {
            match r.variant.as_str() {
                "bn-center" => {
                    r.outcome.final_neg_cos = Some(0.79);
                    r.outcome.final_probe_acc = Some(0.2);
                }
                "bn-scale" => {
                    r.outcome.final_neg_cos = Some(0.2);
                    r.outcome.final_probe_acc = Some(0.4);
                }
                _ => {}
            }
        }
        let v: Vec<_> = evaluate_claims(&tables(runs))[7..]
            .iter()
            .map(|c| c.verdict)
            .collect();
        assert_eq!(&v[..2], [Fails, Fails]);
        // No mechanism variant: F1–F7 only.
        let plain = vec![run("byol", 0, 0.8, 0.3, 0.3)];
        assert_eq!(evaluate_claims(&tables(plain)).len(), 7);
    }

    #[test]
    fn history_is_drawn_for_grids_evaluated_often_and_gaps_average_by_epoch() {
        use crate::log::{EvalRecord, StepRecord};
        let mut t = tables(vec![run("byol", 0, 0.8, 0.3, 0.3)]);
        assert!(!super::super::charts::has_history(&t));
        let eval = |epoch| EvalRecord {
            epoch,
            ..EvalRecord::default()
        };
        t.evals.insert("byol-s0".into(), (0..3).map(eval).collect());
        assert!(!super::super::charts::has_history(&t), "three evaluations");
        t.evals.insert("byol-s0".into(), (0..4).map(eval).collect());
        assert!(super::super::charts::has_history(&t));
        let step = |epoch, pos, neg| StepRecord {
            epoch,
            pos_cos: pos,
            neg_cos: neg,
            ..StepRecord::default()
        };
        t.steps.insert(
            "byol-s0".into(),
            vec![
                step(0, 0.9, 0.9),
                step(0, 0.9, 0.7),
                step(1, 0.8, f64::NAN),
                step(1, 0.6, 0.2),
            ],
        );
        let g = t.gap_by_epoch("byol-s0");
        assert_eq!(g.len(), 2);
        assert!(
            (g[&0] - 0.1).abs() < 1e-12 && (g[&1] - 0.4).abs() < 1e-12,
            "{g:?}"
        );
    }

    #[test]
    fn seed_spread_makes_a_small_effect_inconclusive() {
        // byol beats random by 3 points on average but seeds scatter by ±5: neither verdict.
        let mut runs = Vec::new();
        for (s, p) in [0.25, 0.35, 0.30].into_iter().enumerate() {
            runs.push(run(BASELINE_VARIANT, s as u64, 0.0, 0.0, 0.27));
            runs.push(run("byol", s as u64, 0.8, 0.3, p));
        }
        let c = &evaluate_claims(&tables(runs))[1];
        assert_eq!(c.verdict, ClaimVerdict::Inconclusive, "{}", c.measured);
        assert!(
            c.measured.contains("probe: byol − random +3.0 points"),
            "{}",
            c.measured
        );
        let d = c.decisive().expect("a part");
        assert_eq!(d.seeds, 3);
        assert!(d.low.unwrap() < 0.03 && d.high.unwrap() > 0.03, "{d:?}");
    }

    #[test]
    fn pairing_by_seed_removes_what_seeds_share() {
        // Seeds differ a lot (the data or init of one seed is easier for everyone), but byol
        // beats the untrained encoder of its own seed by 10 ± 0.5 points: paired, that holds.
        let mut runs = Vec::new();
        for (s, base) in [0.15, 0.30, 0.22, 0.40].into_iter().enumerate() {
            let jitter = [0.0, 0.005, -0.005, 0.002][s];
            runs.push(run(BASELINE_VARIANT, s as u64, 0.0, 0.0, base));
            runs.push(run("byol", s as u64, 0.8, 0.3, base + 0.10 + jitter));
        }
        let c = &evaluate_claims(&tables(runs.clone()))[1];
        assert_eq!(c.verdict, ClaimVerdict::Holds, "{}", c.measured);
        // Two seeds only: inconclusive, however clear they look.
        runs.retain(|r| r.seed < 2);
        let c = &evaluate_claims(&tables(runs))[1];
        assert_eq!(c.verdict, ClaimVerdict::Inconclusive, "{}", c.measured);
    }

    #[test]
    fn missing_variants_are_not_measured() {
        let t = tables(vec![run("byol", 0, 0.8, 0.3, 0.4)]);
        assert!(verdicts(&t).iter().all(|v| *v == ClaimVerdict::NotMeasured));
    }
}
