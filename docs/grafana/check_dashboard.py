#!/usr/bin/env python3
"""Checks that the Grafana dashboard (charts/sluice/dashboards/sluice-dashboard.json,
its one copy: the Helm chart ships it) queries only metrics and labels that
the Go code registers. go test ./charts checks the same with Prometheus'
parser against docs/metrics.md.

Run from the repository root: python3 docs/grafana/check_dashboard.py
It reads every PromQL expression of the dashboard (panels and variables),
extracts the metric names and label names, and looks them up in the
non-test Go files (go_* and process_* in client_golang's collectors from the
module cache). Exit status 1 when something is missing.
"""
import glob
import json
import os
import re
import subprocess
import sys

DASH = sys.argv[1] if len(sys.argv) > 1 else "charts/sluice/dashboards/sluice-dashboard.json"
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "or", "and",
            "unless", "bool", "offset", "inf", "nan"}
ALWAYS = {"job", "instance"}  # added by Prometheus at scrape time


def go_sources():
    own = [p for p in glob.glob("**/*.go", recursive=True) if not p.endswith("_test.go")]
    text = "".join(open(p, encoding="utf-8").read() for p in own)
    modcache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True).stdout.strip()
    lib = "".join(open(p, encoding="utf-8").read() for p in glob.glob(
        os.path.join(modcache, "github.com/prometheus/client_golang@*/prometheus/*_collector*.go"))
        if not p.endswith("_test.go"))
    return text, lib


def registered_labels(text):
    """metric -> label names, from Name: "..." + []string{...} and NewDesc."""
    labels = {}
    names = list(re.finditer(r'Name:\s*"(\w+)"', text))
    for i, m in enumerate(names):
        # The options literal ends at the first "}" followed by the label
        # names (a vector), a func or another argument, or ")": search only
        # up to the next metric's name, so that a metric without labels
        # (a GaugeFunc given a named func) does not take the next one's.
        seg = text[m.end():names[i + 1].start() if i + 1 < len(names) else len(text)]
        end = re.search(r'\}\s*(?:,\s*\[\]string\{([^}]*)\}|,\s*\w|\))', seg)
        labels[m.group(1)] = set(re.findall(r'"(\w+)"', end.group(1) or "")) if end else set()
    for m in re.finditer(r'NewDesc\(\s*"(\w+)",\s*"[^"]*",\s*\[\]string\{([^}]*)\}', text, re.S):
        labels[m.group(1)] = set(re.findall(r'"(\w+)"', m.group(2)))
    return labels


def exprs(dash):
    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "expr" and isinstance(v, str):
                    yield v
                else:
                    yield from walk(v)
        elif isinstance(o, list):
            for v in o:
                yield from walk(v)
    yield from walk(dash["panels"])
    for v in dash.get("templating", {}).get("list", []):
        if v.get("definition"):
            yield re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", v["definition"])


def parse(expr):
    """Returns ({metric: [label matchers]}, grouping labels)."""
    metrics, groups = {}, set()
    for m in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        groups |= {g.strip() for g in m.group(1).split(",") if g.strip()}
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    for m in re.finditer(r"([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}|([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()", e):
        name, body = (m.group(1), m.group(2)) if m.group(2) is not None else (m.group(3), "")
        matchers = re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', body)
        for label, op, val in matchers:
            if label == "__name__":
                for alt in val.split("|"):
                    metrics.setdefault(alt, [])
        if name and name.lower() not in KEYWORDS and not re.fullmatch(r"[\d.e+-]+", name):
            metrics.setdefault(name, []).extend(m2 for m2 in matchers if m2[0] != "__name__")
    return metrics, groups


def main():
    text, lib = go_sources()
    labels = registered_labels(text)
    dash = json.load(open(DASH, encoding="utf-8"))
    bad, seen = [], {}
    for expr in exprs(dash):
        metrics, groups = parse(expr)
        allowed_groups = set(ALWAYS) | {"le"}
        for name, matchers in metrics.items():
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            found = next((n for n in (name, base) if f'"{n}"' in text or f'"{n}"' in lib), None)
            where = "sluice" if found and f'"{found}"' in text else "client_golang" if found else None
            seen[name] = where
            if not found:
                bad.append(f"unknown metric {name} in: {expr}")
                continue
            known = labels.get(found, set()) if where == "sluice" else set()
            allowed_groups |= known
            for label, op, val in matchers:
                if label not in known | ALWAYS | ({"le"} if name != base else set()):
                    bad.append(f"{name}: unknown label {label} in: {expr}")
                elif op == "=" and not val.startswith("$") and f'"{val}"' not in text and val not in ("POST", "GET"):
                    bad.append(f"{name}: label value {label}={val!r} not found in the Go code")
        for g in groups - allowed_groups:
            bad.append(f"grouping label {g} not on any metric of: {expr}")
    for name in sorted(seen):
        print(f"{'ok ' if seen[name] else 'BAD'} {name:45} {seen[name] or 'not found'}")
    print(f"{len(seen)} metric names in {sum(1 for _ in exprs(dash))} expressions")
    for b in bad:
        print("BAD", b)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
