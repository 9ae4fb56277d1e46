#!/usr/bin/env python3
"""Draws benches/results/*.png from benches/results/results.json and rewrites
the generated tables of benches/README.md (between <!-- suite:NAME --> and
<!-- /suite:NAME --> markers). suite.sh runs it after suite.py; it can run
alone on the committed results:

    /opt/learneddb-bench-venv/bin/python benches/report.py [results.json]
"""
import json, os, re, sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "benches", "results")
README = os.path.join(ROOT, "benches", "README.md")
COLORS = {"btree": "#1f77b4", "learned": "#d62728", "hash": "#2ca02c", "brin": "#7f7f7f", "seq scan": "#9467bd"}


def med(s):
    return s["median"]


def rng(s, fmt="{:.2f}"):
    return f"{fmt.format(s['min'])}-{fmt.format(s['max'])}"


def mb(b):
    return f"{b / 1e6:.2f} MB" if b < 10e6 else f"{b / 1e6:.1f} MB"


def rows_label(n):
    for div, unit in ((1_000_000, "M"), (1_000, "K")):
        if n >= div:
            return f"{n // div}{unit}"
    return str(n)


# ---------------------------------------------------------------- plots

def plot_scaling(res):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for heap, style in (("shuffled", "-"), ("key order", "--")):
        pts = [r for r in res if r["heap"] == heap]
        x = [r["rows"] for r in pts]
        for i in ("btree", "learned", "hash"):
            y = [med(r["probe"][i]["us"]) for r in pts]
            lo = [med(r["probe"][i]["us"]) - r["probe"][i]["us"]["min"] for r in pts]
            hi = [r["probe"][i]["us"]["max"] - med(r["probe"][i]["us"]) for r in pts]
            ax1.errorbar(x, y, yerr=[lo, hi], fmt=style + "o", color=COLORS[i], capsize=3, markersize=4,
                         label=f"{i}, heap {heap}")
            if i != "hash" or heap == "shuffled":
                ax2.plot(x, [r["probe"][i]["pages"] for r in pts], style + "o", color=COLORS[i], markersize=4,
                         label=f"{i}, heap {heap}")
    for ax, ylabel, title in ((ax1, "microseconds per probe (median, min-max)", "Point lookup, nested loop, cached"),
                              (ax2, "index pages read per probe", "Index pages per probe")):
        ax.set_xscale("log")
        ax.set_xlabel("rows")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS_DIR, "latency_vs_rows.png"), dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for heap, style in (("shuffled", "-"), ("key order", "--")):
        pts = [r for r in res if r["heap"] == heap]
        x = [r["rows"] for r in pts]
        for i in ("btree", "learned", "hash", "brin"):
            if i == "brin" and heap != "key order" or i in ("btree", "hash") and heap != "shuffled":
                continue  # btree and hash do not depend on the heap order; BRIN needs it in key order
            ax.plot(x, [r["size"][i] for r in pts], style + "o", color=COLORS[i], markersize=4,
                    label=i if i in ("btree", "hash", "brin") else f"learned, heap {heap}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rows")
    ax.set_ylabel("index size, bytes")
    ax.set_title("Index size (unique int8 keys, gaps 1 to 7)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS_DIR, "size_vs_rows.png"), dpi=110)
    plt.close(fig)


def plot_cold(c):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    cases = [("os_cache", "from the OS cache"), ("evicted", "evicted from the OS cache")]
    for j, i in enumerate(("btree", "learned")):
        xs = [k + (j - 0.5) * 0.36 for k in range(len(cases))]
        us = [med(c[case][i]["us"]) for case, _ in cases]
        reads = [c[case][i]["reads"] if isinstance(c[case][i]["reads"], (int, float)) else med(c[case][i]["reads"])
                 for case, _ in cases]
        ax1.bar(xs, us, 0.36, color=COLORS[i], label=i)
        ax2.bar(xs, reads, 0.36, color=COLORS[i], label=i)
    for ax, title in ((ax1, "microseconds per probe"), (ax2, "buffer reads per probe")):
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels([label for _, label in cases], fontsize=8)
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle(f"{rows_label(c['rows'])} rows, shared_buffers = {c['shared_buffers']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS_DIR, "cold.png"), dpi=110)
    plt.close(fig)


def plot_distributions(ds):
    fig, ax = plt.subplots(figsize=(8, 3.8))
    names = [d["name"].split(" (")[0].split(":")[0] for d in ds]
    ratios = [d["probe"]["learned"]["us"] / d["probe"]["btree"]["us"] for d in ds]
    ax.barh(range(len(ds)), ratios, color=[COLORS["learned"] if r <= 1.2 else "#ff9896" for r in ratios])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.axvline(1.2, color="black", linestyle="--", linewidth=0.8, label="promise: at most 1.2x btree")
    ax.set_yticks(range(len(ds)))
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("probe time, learned / btree (same run)")
    ax.set_title(f"Key distributions, {rows_label(ds[0]['rows'])} rows")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS_DIR, "distributions.png"), dpi=110)
    plt.close(fig)


def plot_pgbench(p):
    runs = p["runs"]
    fig, ax = plt.subplots(figsize=(11, 4))
    labels = [f"{r['script']}\n{r['mode']}, {r['clients']}c" for r in runs]
    for j, i in enumerate(("btree", "learned")):
        xs = [k + (j - 0.5) * 0.38 for k in range(len(runs))]
        y = [med(r["tps"][i]) for r in runs]
        err = [[med(r["tps"][i]) - r["tps"][i]["min"] for r in runs], [r["tps"][i]["max"] - med(r["tps"][i]) for r in runs]]
        ax.bar(xs, y, 0.38, yerr=err, capsize=2, color=COLORS[i], label=i)
    ax.set_xticks(range(len(runs)))
    ax.set_xticklabels(labels, fontsize=6.5)
    ax.set_ylabel("transactions per second (median, min-max)")
    ax.set_title(f"pgbench, {rows_label(p['rows'])} rows, {p['seconds']} s per run")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS_DIR, "pgbench.png"), dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- tables

def meta_line(results, part):
    m = results.get(part + "_meta")
    if not m:
        return ""
    quick = " **(--quick: small sizes, not for comparison)**" if m.get("quick") else ""
    return (f"_Measured {m['date']} at `{m['commit']}`, PostgreSQL {m['server']}, {m['machine']},"
            f" {m['settings']}; this part took {m['minutes']} min._{quick}\n\n")


def table_scaling(res):
    out = ["| rows | heap | probe btree | learned | hash | learned/btree | hash/btree"
           " | index pages/probe btree | learned | hash |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res:
        p = r["probe"]
        b, ln, h = (p[i]["us"] for i in ("btree", "learned", "hash"))
        out.append(f"| {r['rows']:,} | {r['heap']} | {med(b):.2f} us ({rng(b)}) | {med(ln):.2f} us ({rng(ln)})"
                   f" | {med(h):.2f} us ({rng(h)}) | **{med(ln) / med(b):.2f}** | {med(h) / med(b):.2f}"
                   f" | {p['btree']['pages']:.2f} | {p['learned']['pages']:.2f} | {p['hash']['pages']:.2f} |")
    out += ["", "| rows | heap | size btree | learned | learned/btree | hash | BRIN | build btree | learned | hash |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res:
        s, bt = r["size"], r["build_s"]
        brin = mb(s["brin"]) if "brin" in s else "-"
        out.append(f"| {r['rows']:,} | {r['heap']} | {mb(s['btree'])} | {mb(s['learned'])}"
                   f" | **{s['learned'] / s['btree']:.3f}** | {mb(s['hash'])} | {brin}"
                   f" | {bt['btree']:.2f} s | {bt['learned']:.2f} s | {bt['hash']:.2f} s |")
    return "\n".join(out)


def table_cold(c):
    out = [f"| {rows_label(c['rows'])} rows, shared_buffers {c['shared_buffers']} | probe btree | learned"
           " | learned/btree | buffer reads/probe btree | learned | read time btree | learned |",
           "|---|---|---|---|---|---|---|---|"]
    for case, label in (("os_cache", "files in the OS cache"), ("evicted", "files evicted from the OS cache")):
        b, ln = c[case]["btree"], c[case]["learned"]

        def reads(x):
            return f"{x['reads']:.2f}" if isinstance(x["reads"], (int, float)) else f"{med(x['reads']):.2f}"

        def io(x):
            return f"{med(x['io_ms']):.0f} ms" if "io_ms" in x else "-"
        out.append(f"| {label} | {med(b['us']):.1f} us ({rng(b['us'], '{:.1f}')}) | {med(ln['us']):.1f} us"
                   f" ({rng(ln['us'], '{:.1f}')}) | **{med(ln['us']) / med(b['us']):.2f}** | {reads(b)} | {reads(ln)}"
                   f" | {io(b)} | {io(ln)} |")
    s = c["size"]
    out.append("")
    out.append(f"Index sizes: btree {mb(s['btree'])}, learned {mb(s['learned'])}; {c['probes']:,} probes per run.")
    return "\n".join(out)


def table_distributions(ds):
    out = [f"| {ds[0]['rows']:,} rows | distinct keys | size btree | learned | hash | probe btree | learned"
           " | learned/btree (best; worst) | at most 1.2x? | hash | index pages/probe btree | learned"
           " | max error | mean error | model leaves |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in ds:
        s, p = d["size"], d["probe"]
        b, ln, h = p["btree"], p["learned"], p["hash"]
        ratio = ln["us"] / b["us"]
        worst = ln["us_max"] / b["us_max"]
        out.append(f"| {d['name']} | {d['distinct']:,} | {mb(s['btree'])} | {mb(s['learned'])} | {mb(s['hash'])}"
                   f" | {b['us']:.2f} us | {ln['us']:.2f} us | **{ratio:.2f}**; {worst:.2f}"
                   f" | {'yes' if max(ratio, worst) <= 1.2 else '**no**'} | {h['us']:.2f} us"
                   f" | {b['pages']:.2f} | {ln['pages']:.2f} | {d['max_error']} | {d['mean_error']} | {d['model_leaves']} |")
    return "\n".join(out)


def table_pgbench(p):
    out = ["| script | protocol | clients | TPS btree | learned | learned/btree |", "|---|---|---|---|---|---|"]
    for r in p["runs"]:
        b, ln = r["tps"]["btree"], r["tps"]["learned"]
        out.append(f"| {r['script']} | {r['mode']} | {r['clients']} | {med(b):,.0f} ({rng(b, '{:,.0f}')})"
                   f" | {med(ln):,.0f} ({rng(ln, '{:,.0f}')}) | **{med(ln) / med(b):.2f}** |")
    out.append("")
    out.append("Plans (no setting forces them): " + "; ".join(f"{k}: {v}" for k, v in p["plans"].items()) + ".")
    return "\n".join(out)


def table_tpch(t):
    out = [f"| lineitem, SF {t['scale']} ({t['rows']:,} rows) | size | vs btree | build | vs btree |",
           "|---|---|---|---|---|"]
    for ix in t["indexes"]:
        n, col, kind = ix["name"], ix["column"], ix["kind"]
        bt = f"li_{col[2:]}_btree"
        out.append(f"| `{col}` {kind} | {mb(t['size'][n])} | {t['size'][n] / t['size'][bt]:.3f}"
                   f" | {t['build_s'][n]:.2f} s | {t['build_s'][n] / t['build_s'][bt]:.2f} |")
    out += ["", "| query | btree | learned | learned/btree | BRIN | seq scan | same answers"
            " | first run of a connection: btree | learned | plans |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for q in t["queries"]:
        ms = q["ms"]

        def cell(k):
            return f"{med(ms[k]):.2f} ms ({rng(ms[k], '{:.2f}')})" if k in ms else "-"

        def first(k):
            return f"{med(q['first_ms'][k]):.2f} ms" if k in q.get("first_ms", {}) else "-"
        plans = ", ".join(f"{k}: {v}" for k, v in q["plans"].items())
        out.append(f"| {q['query']} | {cell('btree')} | {cell('learned')} | **{med(ms['learned']) / med(ms['btree']):.2f}**"
                   f" | {cell('brin')} | {cell('seq scan')} | {'yes' if q['same_answers'] else '**NO**'}"
                   f" | {first('btree')} | {first('learned')} | {plans} |")
    return "\n".join(out)


def replace_section(text, name, body):
    pattern = re.compile(rf"(<!-- suite:{name} -->\n).*?(<!-- /suite:{name} -->)", re.S)
    if not pattern.search(text):
        sys.exit(f"benches/README.md has no <!-- suite:{name} --> section")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(RESULTS_DIR, "results.json")
    with open(path) as f:
        results = json.load(f)
    with open(README) as f:
        text = f.read()
    parts = {"scaling": (plot_scaling, table_scaling), "cold": (plot_cold, table_cold),
             "distributions": (plot_distributions, table_distributions), "pgbench": (plot_pgbench, table_pgbench),
             "tpch": (None, table_tpch)}
    for name, (plot, table) in parts.items():
        if name not in results:
            continue
        if plot:
            plot(results[name])
        text = replace_section(text, name, meta_line(results, name) + table(results[name]))
    with open(README, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
