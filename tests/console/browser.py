"""Drives Debian's headless Chromium for tests/console.rs, one JSON command a
line on stdin, one JSON answer a line on stdout:

  {"op": "open", "url": ...}                 -> {"ok": null}
  {"op": "eval", "js": "return ..."}         -> {"ok": <the value>}
  {"op": "type", "css": ..., "text": ...}    -> {"ok": null}  (then submits)
  {"op": "screenshot", "path": ...}          -> {"ok": null}

An empty line ends it. Any failure answers {"error": "..."}; the Rust side decides what is a test
failure, and does all the waiting (with deadlines).
"""

import json
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,800",
]


def main():
    profile = tempfile.mkdtemp(prefix="cflux-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in FLAGS + ["--user-data-dir=" + profile]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        answer({"ok": "ready"})
        for line in sys.stdin:
            if not line.strip():  # the test is done
                break
            command = json.loads(line)
            try:
                answer({"ok": run(driver, command)})
            except Exception as e:  # every failure goes back to the test
                answer({"error": f"{type(e).__name__}: {e}"})
    finally:
        driver.quit()


def run(driver, command):
    op = command["op"]
    if op == "open":
        driver.get(command["url"])
    elif op == "eval":
        return driver.execute_script(command["js"])
    elif op == "type":
        field = driver.find_element(By.CSS_SELECTOR, command["css"])
        field.clear()
        field.send_keys(command["text"])
        field.submit()
    elif op == "screenshot":
        driver.save_screenshot(command["path"])
    else:
        raise ValueError(f"unknown op {op!r}")
    return None


def answer(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
