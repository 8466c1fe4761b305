//! The web console's pages in a real browser: Debian's headless Chromium,
//! driven by Selenium (`tests/console/browser.py`, in a venv under
//! `target/` created on first use), one JSON command per line.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::wait::poll;

/// A headless Chromium under Selenium; quits when dropped.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Browser {
    pub fn start() -> Browser {
        let python = selenium_venv().join("bin/python");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/browser.py");
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tests/console/browser.py");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut browser = Browser {
            child,
            stdin,
            stdout,
        };
        let ready = browser.read_answer();
        assert_eq!(
            ready,
            Ok(json!("ready")),
            "Chromium did not start (apt: chromium chromium-driver; scripts/setup.sh)"
        );
        browser
    }

    pub fn call(&mut self, command: Value) -> Result<Value, String> {
        writeln!(self.stdin, "{command}").map_err(|e| format!("browser driver gone: {e}"))?;
        self.read_answer()
    }

    fn read_answer(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("browser driver gone: {e}"))?;
        let mut answer: Value =
            serde_json::from_str(&line).map_err(|e| format!("driver said {line:?}: {e}"))?;
        match answer.get_mut("ok") {
            Some(value) => Ok(value.take()),
            None => Err(answer["error"].to_string()),
        }
    }

    pub fn open(&mut self, url: &str) {
        self.call(json!({"op": "open", "url": url}))
            .expect("open the console");
    }

    pub fn eval(&mut self, js: &str) -> Value {
        self.call(json!({"op": "eval", "js": js}))
            .unwrap_or_else(|e| panic!("{js}: {e}"))
    }

    pub fn count(&mut self, css: &str) -> u64 {
        let js = format!("return document.querySelectorAll({css:?}).length");
        self.eval(&js).as_u64().unwrap_or(0)
    }

    pub fn type_and_submit(&mut self, css: &str, text: &str) {
        self.call(json!({"op": "type", "css": css, "text": text}))
            .expect("type into the page");
    }

    /// Waits until `js` returns `true`, failing after `deadline` with what
    /// the page showed last.
    pub async fn wait_for(&mut self, deadline: Duration, what: &str, js: &str) {
        let shown = poll(deadline, || {
            let done = self.eval(js) == json!(true);
            let text = self.eval("return document.body.innerText");
            async move {
                if done {
                    Ok(())
                } else {
                    Err(text.to_string())
                }
            }
        })
        .await;
        if let Err(text) = shown {
            panic!("the console did not show {what} within {deadline:?}; it showed: {text}");
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing stdin ends the driver's loop, which quits Chromium.
        let _ = writeln!(self.stdin);
        let _ = self.child.wait();
    }
}

/// A venv with Selenium under `target/`, created on first use.
fn selenium_venv() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-venv");
    let python = venv.join("bin/python");
    let has_selenium = |p: &Path| {
        Command::new(p)
            .args(["-c", "import selenium"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has_selenium(&python) {
        let created = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        assert!(created, "python3 -m venv {} failed", venv.display());
        let installed = Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "selenium==4.51.0",
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            installed && has_selenium(&python),
            "pip install selenium failed"
        );
    }
    venv
}

/// JavaScript: whether the element is displayed.
pub fn shown(css: &str) -> String {
    format!("getComputedStyle(document.querySelector({css:?})).display !== 'none'")
}
