//! Checks of the deployment files: the Prometheus rules (`promtool check
//! rules`, then their unit tests with `promtool test rules`) and the Grafana
//! dashboard (valid JSON, every panel with a query). The queries themselves
//! are evaluated against a real Prometheus in the kernel tier
//! (`tests/tests/prometheus.rs`).

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

/// The rules, their unit tests and the dashboard, relative to the workspace.
pub const RULES: &str = "deploy/prometheus/pagefail.rules.yml";
pub const RULES_TESTS: &str = "deploy/prometheus/pagefail.rules.test.yml";
pub const DASHBOARD: &str = "deploy/grafana/pagefail.json";

/// One check's name and result (`Err` holds what to show).
pub struct Check {
    pub name: &'static str,
    pub result: anyhow::Result<String>,
}

fn promtool(root: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root)
        .output()
        .context("cannot run promtool (Debian package `prometheus`)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("promtool {} failed:\n{text}", args.join(" "));
    }
    Ok(text)
}

/// The number of panel queries in a Grafana dashboard, after checking every
/// panel has a title and at least one non-empty `expr`.
///
/// # Errors
/// Invalid JSON, no panels, or a panel without a query.
pub fn dashboard_queries(json: &str) -> anyhow::Result<usize> {
    let v: serde_json::Value = serde_json::from_str(json).context("the dashboard is not JSON")?;
    let panels = v["panels"]
        .as_array()
        .filter(|p| !p.is_empty())
        .context("the dashboard has no panels")?;
    let mut n = 0;
    for (i, p) in panels.iter().enumerate() {
        let title = p["title"].as_str().unwrap_or_default();
        if title.is_empty() {
            bail!("panel {i} has no title");
        }
        let exprs: Vec<&str> = p["targets"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t["expr"].as_str()).collect())
            .unwrap_or_default();
        if exprs.is_empty() || exprs.iter().any(|e| e.trim().is_empty()) {
            bail!("panel {title:?} has no query");
        }
        n += exprs.len();
    }
    Ok(n)
}

/// Run every check from the workspace root.
#[must_use]
pub fn run_checks(root: &Path) -> Vec<Check> {
    let dashboard = std::fs::read_to_string(root.join(DASHBOARD))
        .with_context(|| format!("cannot read {DASHBOARD}"))
        .and_then(|j| dashboard_queries(&j))
        .map(|n| format!("{n} queries"));
    vec![
        Check {
            name: "deploy::promtool_check_rules",
            result: promtool(root, &["check", "rules", RULES]),
        },
        Check {
            name: "deploy::promtool_test_rules",
            result: promtool(root, &["test", "rules", RULES_TESTS]),
        },
        Check {
            name: "deploy::grafana_dashboard",
            result: dashboard,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_without_queries_is_refused() {
        assert!(dashboard_queries("{").is_err());
        assert!(dashboard_queries(r#"{"panels": []}"#).is_err());
        assert!(dashboard_queries(r#"{"panels": [{"title": "x", "targets": []}]}"#).is_err());
        assert!(
            dashboard_queries(r#"{"panels": [{"title": "x", "targets": [{"expr": " "}]}]}"#)
                .is_err()
        );
        assert_eq!(
            dashboard_queries(
                r#"{"panels": [{"title": "x", "targets": [{"expr": "up"}, {"expr": "up"}]}]}"#
            )
            .unwrap(),
            2
        );
    }

    #[test]
    fn the_shipped_dashboard_has_a_query_in_every_panel() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let json = std::fs::read_to_string(root.join(DASHBOARD)).unwrap();
        assert!(dashboard_queries(&json).unwrap() >= 10);
    }
}
