//! The study's findings F1–F7 as tests over a grid's tables. Each test was written before
//! looking at any result and compares with the seed spread: "above" means by more than
//! twice the pooled standard deviation over seeds (at least 0.01).

use super::tables::GridTables;
use crate::config::BASELINE_VARIANT;
use crate::log::Status;

/// Cosines above this mean "all embeddings point the same way" (the study's 0.9999 at scale):
/// the verdict's threshold, defined once.
const COLLAPSED: f64 = crate::metrics::verdict::COSINE_THRESHOLD;
/// pos − neg above this separates positives from negatives (../shared/science.md).
const SEPARATED: f64 = 0.3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimVerdict {
    Holds,
    Fails,
    NotMeasured,
}

impl ClaimVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Holds => "holds",
            Self::Fails => "fails",
            Self::NotMeasured => "not measured",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Claim {
    pub claim_id: &'static str,
    pub statement: &'static str,
    pub measured: String,
    pub verdict: ClaimVerdict,
}

/// Per-variant summary statistics over seeds (ok runs only).
#[derive(Debug, Clone, Copy)]
struct Stats {
    pos: (f64, f64),
    neg: (f64, f64),
    probe: Option<(f64, f64)>,
    seeds: usize,
}

fn stats(t: &GridTables, variant: &str) -> Option<Stats> {
    let seeds = t
        .runs_of(variant)
        .filter(|r| r.outcome.status == Status::Ok)
        .count();
    let probe = t.variant_stat(variant, |r| r.outcome.final_probe_acc);
    if variant == BASELINE_VARIANT {
        return probe.map(|p| Stats {
            pos: (f64::NAN, 0.0),
            neg: (f64::NAN, 0.0),
            probe: Some(p),
            seeds,
        });
    }
    Some(Stats {
        pos: t.variant_stat(variant, |r| r.outcome.final_pos_cos)?,
        neg: t.variant_stat(variant, |r| r.outcome.final_neg_cos)?,
        probe,
        seeds,
    })
}

/// Whether a is above b by more than twice their pooled seed spread (≥ 0.01).
fn above(a: (f64, f64), b: (f64, f64)) -> bool {
    a.0 - b.0 > margin(a, b)
}

fn margin(a: (f64, f64), b: (f64, f64)) -> f64 {
    (2.0 * ((a.1 * a.1 + b.1 * b.1) / 2.0).sqrt()).max(0.01)
}

fn pct(v: (f64, f64)) -> String {
    format!("{:.1} ± {:.1} %", 100.0 * v.0, 100.0 * v.1)
}

fn cos(s: &Stats) -> String {
    format!(
        "pos {:.3} ± {:.3}, neg {:.3} ± {:.3}",
        s.pos.0, s.pos.1, s.neg.0, s.neg.1
    )
}

fn collapsed(s: &Stats) -> bool {
    s.pos.0 > COLLAPSED && s.neg.0 > COLLAPSED
}

fn separated(s: &Stats) -> bool {
    s.pos.0 - s.neg.0 > SEPARATED
}

fn missing(id: &'static str, statement: &'static str, needs: &str) -> Claim {
    Claim {
        claim_id: id,
        statement,
        measured: format!("needs {needs} in the grid"),
        verdict: ClaimVerdict::NotMeasured,
    }
}

fn verdict(ok: bool) -> ClaimVerdict {
    if ok {
        ClaimVerdict::Holds
    } else {
        ClaimVerdict::Fails
    }
}

/// Per-step gap pos − neg averaged over a variant's seeds, by epoch.
fn gap_by_epoch(t: &GridTables, variant: &str) -> Vec<(u32, f64)> {
    let mut acc: std::collections::BTreeMap<u32, (f64, usize)> = Default::default();
    for r in t.runs_of(variant) {
        for s in t.steps.get(&r.run_id).into_iter().flatten() {
            let g = s.pos_cos - s.neg_cos;
            if g.is_finite() {
                let e = acc.entry(s.epoch).or_insert((0.0, 0));
                e.0 += g;
                e.1 += 1;
            }
        }
    }
    acc.into_iter()
        .map(|(e, (s, n))| (e, s / n as f64))
        .collect()
}

pub fn evaluate_claims(t: &GridTables) -> Vec<Claim> {
    let random = stats(t, BASELINE_VARIANT).and_then(|s| s.probe);
    [f1, f2, f3, f4, f5, f6, f7]
        .iter()
        .map(|claim| claim(t, random))
        .collect()
}

/// F1: no normalization in the heads collapses.
fn f1(t: &GridTables, random: Option<(f64, f64)>) -> Claim {
    let get = |v: &str| stats(t, v);
    let s1 = "Without normalization in the projector and predictor, BYOL collapses (pos and neg cosine > 0.99) and its probe accuracy is no better than a random encoder's.";
    match (get("no-norm"), random) {
        (Some(s), Some(r)) => {
            let probe = s.probe.unwrap_or((f64::NAN, 0.0));
            let ok = collapsed(&s) && !above(probe, r);
            Claim {
                claim_id: "F1",
                statement: s1,
                measured: format!(
                    "no-norm: {}; probe {} vs random {} ({} seeds)",
                    cos(&s),
                    pct(probe),
                    pct(r),
                    s.seeds
                ),
                verdict: verdict(ok),
            }
        }
        _ => missing("F1", s1, "variants `no-norm` and the `random` baseline"),
    }
}

/// F2: batch norm in both heads separates.
fn f2(t: &GridTables, random: Option<(f64, f64)>) -> Claim {
    let get = |v: &str| stats(t, v);
    let s2 = "With batch norm in both MLPs, BYOL does not collapse: positives separate from negatives (pos − neg > 0.3) and the probe beats a random encoder.";
    match (get("byol"), random) {
        (Some(s), Some(r)) => {
            let probe = s.probe.unwrap_or((f64::NAN, 0.0));
            let ok = separated(&s) && above(probe, r);
            Claim {
                claim_id: "F2",
                statement: s2,
                measured: format!(
                    "byol: {} (gap {:.3}); probe {} vs random {} ({} seeds)",
                    cos(&s),
                    s.pos.0 - s.neg.0,
                    pct(probe),
                    pct(r),
                    s.seeds
                ),
                verdict: verdict(ok),
            }
        }
        _ => missing("F2", s2, "variant `byol` and the `random` baseline"),
    }
}

/// F3: layer norm does not prevent collapse.
fn f3(t: &GridTables, _random: Option<(f64, f64)>) -> Claim {
    let get = |v: &str| stats(t, v);
    let s3 = "Layer norm in the MLPs (no batch statistics) does not prevent collapse: pos and neg cosine > 0.99.";
    match get("layer-norm") {
        Some(s) => Claim {
            claim_id: "F3",
            statement: s3,
            measured: format!("layer-norm: {} ({} seeds)", cos(&s), s.seeds),
            verdict: verdict(collapsed(&s)),
        },
        None => missing("F3", s3, "variant `layer-norm`"),
    }
}

/// F4: batch norm in either head alone suffices.
fn f4(t: &GridTables, random: Option<(f64, f64)>) -> Claim {
    let get = |v: &str| stats(t, v);
    let s4 = "Batch norm in either MLP alone suffices (each separates, pos − neg > 0.3, and beats the random probe), projector-only better than predictor-only.";
    match (get("projector-bn"), get("predictor-bn"), random) {
        (Some(a), Some(b), Some(r)) => {
            let (pa, pb) = (
                a.probe.unwrap_or((f64::NAN, 0.0)),
                b.probe.unwrap_or((f64::NAN, 0.0)),
            );
            let ok =
                separated(&a) && separated(&b) && above(pa, r) && above(pb, r) && above(pa, pb);
            Claim {
                claim_id: "F4",
                statement: s4,
                measured: format!(
                    "projector-bn: {} (gap {:.3}), probe {}; predictor-bn: {} (gap {:.3}), probe {}; random {}",
                    cos(&a),
                    a.pos.0 - a.neg.0,
                    pct(pa),
                    cos(&b),
                    b.pos.0 - b.neg.0,
                    pct(pb),
                    pct(r)
                ),
                verdict: verdict(ok),
            }
        }
        _ => missing(
            "F4",
            s4,
            "variants `projector-bn`, `predictor-bn` and the `random` baseline",
        ),
    }
}

/// F5: an explicit contrastive loss learns without normalization.
fn f5(t: &GridTables, random: Option<(f64, f64)>) -> Claim {
    let get = |v: &str| stats(t, v);
    let s5 = "The same network without normalization but trained with an explicit contrastive loss (InfoNCE with negatives) learns: it does not collapse and beats the random probe.";
    match (get("contrastive"), random) {
        (Some(s), Some(r)) => {
            let probe = s.probe.unwrap_or((f64::NAN, 0.0));
            let ok = !collapsed(&s) && above(probe, r);
            Claim {
                claim_id: "F5",
                statement: s5,
                measured: format!(
                    "contrastive: {}; probe {} vs random {} ({} seeds)",
                    cos(&s),
                    pct(probe),
                    pct(r),
                    s.seeds
                ),
                verdict: verdict(ok),
            }
        }
        _ => missing("F5", s5, "variant `contrastive` and the `random` baseline"),
    }
}

/// F6: encoder-only batch norm collapses, then separates.
fn f6(t: &GridTables, _random: Option<(f64, f64)>) -> Claim {
    let s6 = "With batch norm only in the encoder, training first collapses (pos − neg < 0.05 in some epoch of the first half) and then separates (last-epoch gap larger by > 0.1).";
    let gaps = gap_by_epoch(t, "encoder-bn");
    if gaps.len() >= 4 {
        let half = gaps.len() / 2;
        let early = gaps[..half]
            .iter()
            .map(|g| g.1)
            .fold(f64::INFINITY, f64::min);
        let last = gaps[gaps.len() - 1].1;
        Claim {
            claim_id: "F6",
            statement: s6,
            measured: format!(
                "encoder-bn: smallest first-half epoch gap {early:.3}, last-epoch gap {last:.3}"
            ),
            verdict: verdict(early < 0.05 && last - early > 0.1),
        }
    } else {
        missing(
            "F6",
            s6,
            "variant `encoder-bn` (experiments/encoder-bn.toml) with ≥ 4 epochs",
        )
    }
}

/// F7: without batch norm, LARS or weight decay rescues SGD.
fn f7(t: &GridTables, random: Option<(f64, f64)>) -> Claim {
    let get = |v: &str| stats(t, v);
    let s7 = "With no batch norm anywhere, plain SGD learns nothing (probe not above random) while LARS or stronger weight decay learns (probe above random).";
    let rescued: Vec<(&str, Stats)> = ["lars", "sgd-high-wd"]
        .iter()
        .filter_map(|v| get(v).map(|s| (*v, s)))
        .collect();
    match (get("sgd"), random) {
        (Some(s), Some(r)) if !rescued.is_empty() => {
            let probe = s.probe.unwrap_or((f64::NAN, 0.0));
            let any_rescue = rescued.iter().any(|(_, x)| above(x.probe.unwrap_or((f64::NAN, 0.0)), r));
            let detail: Vec<String> = rescued
                .iter()
                .map(|(v, x)| format!("{v} probe {}", pct(x.probe.unwrap_or((f64::NAN, 0.0)))))
                .collect();
            Claim {
                claim_id: "F7",
                statement: s7,
                measured: format!("sgd probe {}; {}; random {}", pct(probe), detail.join("; "), pct(r)),
                verdict: verdict(!above(probe, r) && any_rescue),
            }
        }
        _ => missing("F7", s7, "variants `sgd` and `lars` or `sgd-high-wd` (experiments/no-bn-optimizers.toml) and the `random` baseline"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{RunOutcome, SummaryRecord};

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
    fn seed_spread_decides_what_counts_as_above() {
        // byol beats random by 3 points on average but seeds scatter by ±5: not "above".
        let mut runs = Vec::new();
        for (s, p) in [0.25, 0.35, 0.30].into_iter().enumerate() {
            runs.push(run(BASELINE_VARIANT, s as u64, 0.0, 0.0, 0.27));
            runs.push(run("byol", s as u64, 0.8, 0.3, p));
        }
        let c = &evaluate_claims(&tables(runs))[1];
        assert_eq!(c.verdict, ClaimVerdict::Fails, "{}", c.measured);
        assert!(c.measured.contains("30.0 ± 5.0 %"), "{}", c.measured);
    }

    #[test]
    fn missing_variants_are_not_measured() {
        let t = tables(vec![run("byol", 0, 0.8, 0.3, 0.4)]);
        assert!(verdicts(&t).iter().all(|v| *v == ClaimVerdict::NotMeasured));
    }
}
