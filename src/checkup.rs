//! A checkup's report: one line per check, each passed (✓), failed (✗) or
//! not proved (!), with what was proved and, for a failure, what to fix and
//! where. `paybridge doctor` prints it (in English); the admin page shows
//! the same report, in Chinese where a line has it (this is ground so the
//! admin layer can hold one without knowing how the checks are made).

use serde::{Deserialize, Serialize};

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Proved: WeChat (or the machine) answered as it does for a right setting.
    Passed,
    /// Wrong: payments or refunds will fail until it is fixed.
    Failed,
    /// Neither proved nor disproved here; the detail says what was not proved.
    Unproved,
}

impl Outcome {
    /// The mark printed before the check: `✓`, `✗` or `!`.
    pub fn mark(self) -> &'static str {
        match self {
            Outcome::Passed => "✓",
            Outcome::Failed => "✗",
            Outcome::Unproved => "!",
        }
    }
}

/// One check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// A stable code (`login`, `v2_key`, …), for the admin page's translations and for scripts.
    pub code: String,
    /// What was checked, for people (`mini-program login (wx…)`).
    pub name: String,
    /// The outcome.
    pub outcome: Outcome,
    /// What was proved, or what went wrong, in one sentence. Never a secret.
    pub detail: String,
    /// For a failure (and some unproved checks): what to change, and where
    /// (the page of pay.weixin.qq.com or mp.weixin.qq.com, the setting).
    pub fix: Option<String>,
    /// `detail` in Chinese, for the admin page in 中文 (`None`: English only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail_zh: Option<String>,
    /// `fix` in Chinese (`None`: English only, or no fix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix_zh: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn passed(code: &str, name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check::new(code, name.into(), Outcome::Passed, detail.into(), None)
    }

    /// A failed check, with its fix.
    pub fn failed(code: &str, name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(code, name.into(), Outcome::Failed, detail.into(), Some(fix.into()))
    }

    /// A check that proved nothing either way; `next` says how it will be proved, if anything does.
    pub fn unproved(code: &str, name: impl Into<String>, detail: impl Into<String>, next: Option<String>) -> Check {
        Check::new(code, name.into(), Outcome::Unproved, detail.into(), next)
    }

    fn new(code: &str, name: String, outcome: Outcome, detail: String, fix: Option<String>) -> Check {
        Check { code: code.into(), name, outcome, detail, fix, detail_zh: None, fix_zh: None }
    }

    /// The same check with its detail in Chinese.
    pub fn zh(mut self, detail: impl Into<String>) -> Check {
        self.detail_zh = Some(detail.into());
        self
    }

    /// The same check with its fix (or next step) in Chinese.
    pub fn zh_fix(mut self, fix: impl Into<String>) -> Check {
        self.fix_zh = Some(fix.into());
        self
    }

    /// Whether a person reading Chinese gets every part of the line in
    /// Chinese: its detail, and its fix if it has one.
    pub fn has_zh(&self) -> bool {
        self.detail_zh.is_some() && (self.fix.is_none() || self.fix_zh.is_some())
    }
}

/// The checks of one run, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Each check.
    pub checks: Vec<Check>,
}

impl Report {
    /// Adds a check.
    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    /// Whether any check failed (the doctor then exits non-zero).
    pub fn failed(&self) -> bool {
        self.count(Outcome::Failed) > 0
    }

    /// How many checks ended with `outcome`.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.checks.iter().filter(|c| c.outcome == outcome).count()
    }

    /// The report for a terminal: one line per check, its fix indented
    /// below it, then a summary line.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            out.push_str(&format!("{} {}: {}\n", check.outcome.mark(), check.name, check.detail));
            if let Some(fix) = &check.fix {
                let label = if check.outcome == Outcome::Failed { "fix" } else { "next" };
                out.push_str(&format!("    {label}: {fix}\n"));
            }
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// `5 passed, 1 failed, 1 not proved`.
    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} failed, {} not proved",
            self.count(Outcome::Passed),
            self.count(Outcome::Failed),
            self.count(Outcome::Unproved)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_prints_one_line_per_check_and_the_fix_under_a_failure() {
        let mut report = Report::default();
        report.push(Check::passed("login", "mini-program login", "AppID and AppSecret accepted"));
        assert!(!report.failed());
        report.push(
            Check::failed("v2_key", "API v2 key", "签名错误", "set wechat.mch_key").zh("签名错误").zh_fix("设置"),
        );
        report.push(Check::unproved("apiv3_key", "APIv3 key", "not provable here", None));
        assert!(report.failed());
        assert_eq!(
            report.text(),
            "✓ mini-program login: AppID and AppSecret accepted\n✗ API v2 key: 签名错误\n    fix: set wechat.mch_key\n\
             ! APIv3 key: not provable here\n1 passed, 1 failed, 1 not proved\n"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["checks"][1]["outcome"], "failed");
        assert_eq!(json["checks"][1]["fix_zh"], "设置");
        assert!(json["checks"][0].get("detail_zh").is_none(), "absent when there is none");
        assert!(report.checks[1].has_zh() && !report.checks[2].has_zh());
        assert!(!report.text().contains("设置"), "the terminal's report is English");
        assert_eq!(serde_json::from_value::<Report>(json).unwrap(), report);
    }
}
