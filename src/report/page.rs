//! `index.md`, `index.html` and `claims.parquet`: the report a researcher reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::claims::Claim;
use super::statistics::Part;
use super::tables::GridTables;
use crate::config::{MethodName, BASELINE_VARIANT};
use crate::log::{write_parquet, write_text, Status, TableBuilder};

/// The study's published numbers (STL-10, ResNet-18, 10 epochs): probe accuracy %, pos, neg.
fn study(variant: &str) -> Option<(f64, Option<(f64, f64)>)> {
    Some(match variant {
        "contrastive" => (44.1, Some((0.90, 0.53))),
        "byol" => (57.7, Some((0.88, 0.27))),
        "projector-bn" => (55.3, Some((0.87, 0.27))),
        "predictor-bn" => (48.0, Some((0.96, 0.73))),
        "no-norm" => (28.3, Some((1.0, 1.0))),
        "layer-norm" => (29.4, Some((1.0, 1.0))),
        BASELINE_VARIANT => (28.8, None),
        _ => return None,
    })
}

fn loss_name(method: &str) -> &'static str {
    MethodName::parse(method).map_or("—", |m| m.spec().loss)
}

fn fmt_pct(v: Option<(f64, f64)>) -> String {
    v.map_or("—".into(), |(m, s)| {
        format!("{:.1} ± {:.1}", 100.0 * m, 100.0 * s)
    })
}

fn fmt_cos(p: Option<(f64, f64)>, n: Option<(f64, f64)>) -> String {
    match (p, n) {
        (Some(p), Some(n)) => format!("{:.2} / {:.2}", p.0, n.0),
        _ => "—".into(),
    }
}

/// A table as rows of cells; rendered to Markdown and HTML from the same data.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn markdown(&self) -> String {
        let esc = |s: &String| s.replace('|', "\\|");
        let mut out = format!(
            "| {} |\n",
            self.header.iter().map(esc).collect::<Vec<_>>().join(" | ")
        );
        out += &format!("|{}|\n", vec!["---"; self.header.len()].join("|"));
        for r in &self.rows {
            out += &format!(
                "| {} |\n",
                r.iter().map(esc).collect::<Vec<_>>().join(" | ")
            );
        }
        out
    }

    fn html(&self) -> String {
        let mut out = String::from("<table>\n<tr>");
        for h in &self.header {
            let _ = write!(out, "<th>{}</th>", html_escape(h));
        }
        out += "</tr>\n";
        for r in &self.rows {
            out += "<tr>";
            for c in r {
                let _ = write!(out, "<td>{}</td>", html_escape(c));
            }
            out += "</tr>\n";
        }
        out + "</table>\n"
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn variant_table(t: &GridTables) -> Table {
    let mut rows = Vec::new();
    let mut variants = t.variants();
    variants.push(BASELINE_VARIANT.into());
    for v in &variants {
        let runs: Vec<_> = t.runs_of(v).collect();
        let Some(first) = runs.first() else { continue };
        let probe = t.variant_stat(v, |r| r.outcome.final_probe_acc);
        let pos = t.variant_stat(v, |r| r.outcome.final_pos_cos);
        let neg = t.variant_stat(v, |r| r.outcome.final_neg_cos);
        let mut verdicts: BTreeMap<String, usize> = BTreeMap::new();
        for r in &runs {
            let key = if r.outcome.status == Status::Ok {
                r.outcome
                    .collapse_verdict
                    .map_or("—", |v| v.as_str())
                    .to_string()
            } else {
                r.outcome.status.as_str().to_string()
            };
            *verdicts.entry(key).or_default() += 1;
        }
        let verdict = verdicts
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let published = study(v);
        let random = v == BASELINE_VARIANT;
        rows.push(vec![
            v.clone(),
            if random {
                "—".into()
            } else {
                first.projector_norm.clone()
            },
            if random {
                "—".into()
            } else {
                first.predictor_norm.clone().unwrap_or_else(|| "—".into())
            },
            if random {
                "— (untrained encoder)".into()
            } else {
                loss_name(&first.method).into()
            },
            fmt_pct(probe),
            published.map_or("—".into(), |p| format!("{:.1}", p.0)),
            fmt_cos(pos, neg),
            published
                .and_then(|p| p.1)
                .map_or("—".into(), |(a, b)| format!("{a:.2} / {b:.2}")),
            if random { "—".into() } else { verdict },
        ]);
    }
    Table {
        header: [
            "variant",
            "projector norm",
            "predictor norm",
            "loss",
            "probe acc % (ours, mean ± sd)",
            "probe acc % (study)",
            "pos / neg cos (ours)",
            "pos / neg cos (study)",
            "verdict (runs)",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    }
}

/// Every part of every claim with the numbers that decided it.
fn tests_table(claims: &[Claim]) -> Table {
    let num = |v: Option<f64>| v.map_or("—".into(), |x| format!("{x:.3}"));
    Table {
        header: [
            "claim", "part", "test", "effect", "95 % CI", "seeds", "minimum", "verdict",
        ]
        .map(String::from)
        .to_vec(),
        rows: claims
            .iter()
            .flat_map(|c| {
                c.parts.iter().map(move |p| {
                    vec![
                        c.claim_id.into(),
                        p.label.clone(),
                        p.test.clone(),
                        num(p.effect),
                        match (p.low, p.high) {
                            (Some(lo), Some(hi)) => format!("[{lo:.3}, {hi:.3}]"),
                            _ => "—".into(),
                        },
                        p.seeds.to_string(),
                        num(Some(p.min_effect).filter(|m| m.is_finite())),
                        p.verdict.as_str().into(),
                    ]
                })
            })
            .collect(),
    }
}

fn claims_table(claims: &[Claim]) -> Table {
    Table {
        header: ["claim", "statement", "measured", "verdict"]
            .map(String::from)
            .to_vec(),
        rows: claims
            .iter()
            .map(|c| {
                vec![
                    c.claim_id.into(),
                    c.statement.into(),
                    c.measured.clone(),
                    c.verdict.as_str().into(),
                ]
            })
            .collect(),
    }
}

fn runs_table(t: &GridTables) -> Table {
    let f = |v: Option<f64>| v.map_or("—".into(), |x| format!("{x:.3}"));
    Table {
        header: [
            "run",
            "status",
            "pos",
            "neg",
            "z_std",
            "rank",
            "eval rank",
            "probe",
            "kNN",
            "verdict",
            "error",
        ]
        .map(String::from)
        .to_vec(),
        rows: t
            .runs
            .iter()
            .map(|r| {
                vec![
                    r.run_id.clone(),
                    if r.outcome.status == Status::Ok {
                        "ok".into()
                    } else {
                        format!("**{}**", r.outcome.status.as_str())
                    },
                    f(r.outcome.final_pos_cos),
                    f(r.outcome.final_neg_cos),
                    f(r.outcome.final_z_std),
                    f(r.outcome.final_effective_rank),
                    f(r.outcome.eval_z_effective_rank),
                    f(r.outcome.final_probe_acc),
                    f(r.outcome.final_knn_acc),
                    r.outcome
                        .collapse_verdict
                        .map_or("—", |v| v.as_str())
                        .to_string(),
                    r.outcome.error.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    }
}

/// The history chart, drawn for grids evaluated often enough ([`super::charts::has_history`]).
pub const HISTORY_CHART: (&str, &str) = (
    "history",
    "History per epoch: gap, probe accuracy and effective rank, mean ± sd over seeds",
);

/// The charts of this grid's report, in page order.
fn charts_of(t: &GridTables) -> Vec<(&'static str, &'static str)> {
    let mut charts = CHARTS.to_vec();
    if super::charts::has_history(t) {
        charts.push(HISTORY_CHART);
    }
    charts
}

pub const CHARTS: [(&str, &str); 5] = [
    (
        "cosine_bars",
        "Positive vs negative cosine per variant (the study's bar figure)",
    ),
    (
        "probe_accuracy",
        "Linear-probe accuracy per epoch, untrained encoder dashed (the study's epoch figure)",
    ),
    ("cosine_steps", "Positive and negative cosine per step"),
    (
        "spread_steps",
        "Spread and effective rank of the projections per step",
    ),
    ("spectra", "Covariance spectra at the last evaluation"),
];

const NOTE: &str = "The study's numbers come from ResNet-18 on STL-10 (96 px, batch 256, 10 epochs); ours from \
the grid's own setting. Compare the pattern (which variants collapse, which separate and beat the untrained \
encoder), not the absolute values. Every claim's test was written before any result was seen; where our \
setting disagrees with the study, the claim says `fails` with its numbers, and where the seeds cannot tell, \
`inconclusive`.";

/// How the claims are decided, said once on the page (the rules live in report/statistics.rs).
const RULES: &str = "How a verdict is reached: a claim holds when each of its parts holds, fails when any \
part fails, and is inconclusive otherwise. Probe comparisons pair each run with the other variant's run of the \
same seed (the untrained encoder of that seed, for `random`) and take the 95 % Student-t confidence interval \
of the mean paired difference (seeds − 1 degrees of freedom): \"A above B\" holds when the whole interval lies \
above the minimum effect of 3 points, fails when it lies wholly below, and is inconclusive when it straddles \
it (\"not above\" the other way round). Collapse (pos and neg cosine > 0.99) and separation (pos − neg > 0.3) \
are judged per seed: they hold on ≥ 80 % of the seeds, fail on < 50 %, and are inconclusive in between. Fewer \
than 3 seeds decide nothing. Probe and kNN accuracies are 5-fold cross-validated over every evaluation image \
(class-stratified folds, the same for every run).";

/// Which data and CPU the numbers come from, and what that means for reproducing them.
fn machine_line(t: &GridTables) -> String {
    let cpus = t.distinct(|r| &r.outcome.cpu);
    let on = if cpus.is_empty() {
        "an unrecorded CPU".to_string()
    } else {
        cpus.join("; ")
    };
    format!(
        "Data: {}. Measured on {on}. The same seed gives the same numbers bit for bit with \
         kernels of the same instruction set; with others (AVX2 against AVX-512) floating-point \
         sums differ in their last digits and training amplifies that, so compare across \
         machines within the seeds' spread.",
        t.distinct(|r| &r.data).join("; ")
    )
}

/// Writes index.md, index.html and claims.parquet into `out`.
pub fn write_page(t: &GridTables, claims: &[Claim], out: &Path) -> anyhow::Result<()> {
    let variants = variant_table(t);
    let claims_t = claims_table(claims);
    let tests_t = tests_table(claims);
    let runs = runs_table(t);
    let machine = machine_line(t);
    let heading = if claims.iter().any(|c| c.claim_id.starts_with('M')) {
        "Claims (findings F1–F7 of the study; mechanism claims M1–M4)"
    } else {
        "Claims (findings F1–F7 of the study)"
    };
    let mut md = format!("# collapse-lab report: {}\n\n", t.name);
    md += &format!(
        "{NOTE}\n\n{machine}\n\n## {heading}\n\n{RULES}\n\n{}\n### How each claim was decided\n\n{}\n",
        claims_t.markdown(),
        tests_t.markdown()
    );
    md += &format!(
        "## Variants (the study's table)\n\n{}\n",
        variants.markdown()
    );
    md += "## Charts\n\n";
    for (file, title) in charts_of(t) {
        md += &format!("### {title}\n\n![{title}]({file}.png)\n\n");
    }
    md += &format!(
        "## Runs\n\nStatus other than ok is marked; a failed or diverged run keeps its row.\n\n{}",
        runs.markdown()
    );
    write_text(&out.join("index.md"), &md)?;

    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>collapse-lab report: {name}</title>\n<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #bbb;padding:4px 8px;text-align:left;vertical-align:top}}th{{background:#eee}}img{{max-width:100%}}</style></head><body>\n<h1>collapse-lab report: {name}</h1>\n<p>{note}</p>\n<p>{machine}</p>\n",
        name = html_escape(&t.name),
        note = html_escape(NOTE),
        machine = html_escape(&machine)
    );
    html += &format!(
        "<h2>{heading}</h2>\n<p>{}</p>\n{}<h3>How each claim was decided</h3>\n{}",
        html_escape(RULES),
        claims_t.html(),
        tests_t.html()
    );
    html += &format!("<h2>Variants (the study's table)</h2>\n{}", variants.html());
    html += "<h2>Charts</h2>\n";
    for (file, title) in charts_of(t) {
        html += &format!(
            "<h3>{}</h3>\n<img src=\"{file}.svg\" alt=\"{}\">\n",
            html_escape(title),
            html_escape(title)
        );
    }
    html += &format!("<h2>Runs</h2>\n{}</body></html>\n", runs.html());
    write_text(&out.join("index.html"), &html)?;

    write_claims(claims, out)
}

/// `claims.parquet` (one row per claim, with the statistics of the part that decided it) and
/// `claim_tests.parquet` (one row per part of every claim).
fn write_claims(claims: &[Claim], out: &Path) -> anyhow::Result<()> {
    let decisive: Vec<Option<&Part>> = claims.iter().map(|c| c.decisive()).collect();
    let of = |f: fn(&Part) -> Option<f64>| decisive.iter().map(|p| p.and_then(f)).collect();
    let mut df = TableBuilder::new()
        .str(
            "claim_id",
            claims.iter().map(|c| c.claim_id.to_string()).collect(),
        )
        .str(
            "statement",
            claims.iter().map(|c| c.statement.to_string()).collect(),
        )
        .str(
            "measured",
            claims.iter().map(|c| c.measured.clone()).collect(),
        )
        .str(
            "verdict",
            claims
                .iter()
                .map(|c| c.verdict.as_str().to_string())
                .collect(),
        )
        .opt_str(
            "comparison",
            decisive
                .iter()
                .map(|p| p.map(|p| p.label.clone()))
                .collect(),
        )
        .opt_f64("effect", of(|p| p.effect))
        .opt_f64("ci_low", of(|p| p.low))
        .opt_f64("ci_high", of(|p| p.high))
        .opt_str(
            "test",
            decisive.iter().map(|p| p.map(|p| p.test.clone())).collect(),
        )
        .u64(
            "seeds",
            decisive
                .iter()
                .map(|p| p.map_or(0, |p| p.seeds as u64))
                .collect(),
        )
        .opt_f64(
            "min_effect",
            of(|p| Some(p.min_effect).filter(|m| m.is_finite())),
        )
        .build()?;
    write_parquet(&out.join("claims.parquet"), &mut df)?;
    let parts: Vec<(&str, &Part)> = claims
        .iter()
        .flat_map(|c| c.parts.iter().map(move |p| (c.claim_id, p)))
        .collect();
    let col = |f: fn(&Part) -> Option<f64>| parts.iter().map(|(_, p)| f(p)).collect();
    let mut df = TableBuilder::new()
        .str(
            "claim_id",
            parts.iter().map(|(c, _)| c.to_string()).collect(),
        )
        .str("part", parts.iter().map(|(_, p)| p.label.clone()).collect())
        .str("test", parts.iter().map(|(_, p)| p.test.clone()).collect())
        .opt_f64("effect", col(|p| p.effect))
        .opt_f64("ci_low", col(|p| p.low))
        .opt_f64("ci_high", col(|p| p.high))
        .u64("seeds", parts.iter().map(|(_, p)| p.seeds as u64).collect())
        .opt_f64(
            "min_effect",
            col(|p| Some(p.min_effect).filter(|m| m.is_finite())),
        )
        .str(
            "verdict",
            parts
                .iter()
                .map(|(_, p)| p.verdict.as_str().to_string())
                .collect(),
        )
        .build()?;
    write_parquet(&out.join("claim_tests.parquet"), &mut df)
}
