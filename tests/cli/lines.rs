//! Two majors side by side (`lines`): each line of an app is its own release line on the same
//! site (its own directory or container, history and back-out). Line 2 is added next to line 1,
//! a failed upgrade of line 2 is backed out without touching line 1, and line 1 is retired
//! after a drain gate. The same scenario runs on the local, SSH and Docker targets.

use crate::support::{Fleet, Workspace};

/// What line `app@N` serves on the scenario's site, read from the target itself.
pub type Serving<'a> = &'a dyn Fn(&str) -> Option<String>;

pub struct Scenario<'a> {
    pub ws: &'a Workspace,
    pub app: &'a str,
    pub site: &'a str,
    /// The versions: line 1, line 2, and a bad line-2 version whose check fails.
    pub v1: &'a str,
    pub v2: &'a str,
    pub bad: &'a str,
    pub serving: Serving<'a>,
}

impl Scenario<'_> {
    fn plan(&self, name: &str, body: &str) {
        self.ws.write(
            &format!("plans/{name}.yaml"),
            &format!(
                "version: 1\nkind: release\nname: {name}\n{body}waves:\n  - name: only\n    sites: [{}]\n    before:\n      - name: drain-1x\n        wait_until: {{ command: [cat, drain-1x], equals: 0, every: 1s, deadline: 7d }}\non_failure: backout\n",
                self.site
            ),
        );
    }

    fn release(&self, name: &str, line: u32, version: &str) {
        self.plan(
            name,
            &format!(
                "releases: [{{ app: \"{}@{line}\", version: \"{version}\" }}]\n",
                self.app
            ),
        );
    }

    pub fn run(&self) {
        let (l1, l2) = (format!("{}@1", self.app), format!("{}@2", self.app));
        let serving = self.serving;
        self.ws.write("drain-1x", "0\n");
        self.release("line1", 1, self.v1);
        self.ws.deploy("line1");
        assert_eq!(serving(&l1).as_deref(), Some(self.v1));
        assert_eq!(serving(&l2), None);

        // Line 2 next to line 1.
        self.release("line2", 2, self.v2);
        self.ws
            .plan_file("line2")
            .expect_code(2)
            .stdout_has(&format!("/{l2}  (none) -> {}", self.v2));
        self.ws.run(&["apply", "line2.json"]).expect_code(0);
        assert_eq!(serving(&l1).as_deref(), Some(self.v1), "line 1 untouched");
        assert_eq!(serving(&l2).as_deref(), Some(self.v2));

        // A bad line-2 release is backed out; line 1 is never touched.
        self.release("bad2", 2, self.bad);
        self.ws.plan_file("bad2").expect_code(2);
        self.ws.run(&["apply", "bad2.json"]).expect_code(6);
        assert_eq!(serving(&l2).as_deref(), Some(self.v2), "line 2 backed out");
        assert_eq!(serving(&l1).as_deref(), Some(self.v1), "line 1 untouched");
        let touched: Vec<String> = self
            .ws
            .ledger()
            .iter()
            .filter(|e| e["app"] == l1.as_str() && e["event"] != "plan_created")
            .map(|e| e["plan_id"].to_string())
            .collect();
        assert_eq!(
            touched.len(),
            2,
            "only line1's own apply touched line 1: {touched:?}"
        );

        // Retire line 1 once its timers have drained.
        self.ws.write("drain-1x", "3\n");
        self.plan(
            "retire1",
            &format!("releases: []\nretire: [{{ app: \"{l1}\" }}]\n"),
        );
        self.ws
            .plan_file("retire1")
            .expect_code(2)
            .stdout_has(&format!("/{l1}  {} -> (retired)", self.v1));
        self.ws.run(&["apply", "retire1.json"]).expect_code(10);
        assert_eq!(
            serving(&l1).as_deref(),
            Some(self.v1),
            "not before the drain"
        );
        self.ws.write("drain-1x", "0\n");
        self.ws
            .run(&["apply", "--resume", "retire1.json"])
            .expect_code(0);
        assert_eq!(serving(&l1), None, "line 1 retired");
        assert_eq!(serving(&l2).as_deref(), Some(self.v2), "line 2 serves on");
    }
}

pub const LINES: &str = "    lines: [{ major: 1 }, { major: 2 }]\n";

/// The `demo` app of an inventory given two lines (its version of record on line 2).
fn with_lines(inventory: &str) -> String {
    inventory.replacen(
        "  - id: demo\n    version: 1.0.0\n",
        &format!("  - id: demo\n    version: 2.0.0\n{LINES}"),
        1,
    )
}

/// A workspace whose `demo` has two lines, and a bad 2.x release (its check fails).
fn workspace() -> Workspace {
    let ws = Workspace::new();
    let bad = ws.path().join("artifacts/2.9.9");
    std::fs::create_dir_all(bad.join("bin")).unwrap();
    std::fs::write(bad.join("VERSION"), "broken").unwrap();
    std::fs::copy(
        ws.path().join("artifacts/3.0.0/bin/health"),
        bad.join("bin/health"),
    )
    .unwrap();
    ws
}

#[test]
fn two_majors_side_by_side_on_the_local_target() {
    let ws = workspace();
    ws.write("inventory.yaml", &with_lines(&Workspace::inventory("")));
    let root = ws.path().join("targets/clinic-a");
    let serving = |app: &str| {
        let link = std::fs::read_link(root.join(app).join("current")).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    };
    Scenario {
        ws: &ws,
        app: "demo",
        site: "clinic-a",
        v1: "1.0.0",
        v2: "2.0.0",
        bad: "2.9.9",
        serving: &serving,
    }
    .run();
}

#[cfg(feature = "ssh")]
#[test]
fn two_majors_side_by_side_on_an_ssh_endpoint() {
    let fleet = Fleet::start(1, "45.0");
    let ws = workspace();
    let known = fleet.path().join("known_hosts");
    ws.write("inventory.yaml", &with_lines(&fleet.inventory(&ws, &known)));
    let serving = |app: &str| fleet.current(1, app);
    Scenario {
        ws: &ws,
        app: "demo",
        site: "clinic-a",
        v1: "1.0.0",
        v2: "2.0.0",
        bad: "2.9.9",
        serving: &serving,
    }
    .run();
}
