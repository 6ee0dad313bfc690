"""Quality report: per-sample JSONL -> summaries by set, method and severity bin -> CSV, JSON, Markdown, SVG.

Everything here is recomputed from the per-sample files, in manifest order, so an interrupted and resumed run
gives the same ``results.csv`` as an uninterrupted one. The header (hardware, git commit, time) is only in the
JSON and Markdown files.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..metrics.fidelity import describe
from ..metrics.landmarks import MAX_ERROR, auc, ced_curve, failure_rate
from ..metrics.severity import SEVERITY_BINS, SEVERITY_CONVENTION
from .common import env_lines, environment, read_jsonl, slug
from .plots import Series, bar_chart, line_chart, write_svg, write_text_atomic

__all__ = ["environment", "write_quality_report", "summarise", "write_text_atomic", "CSV_FIELDS",
           "SET_DESCRIPTIONS", "PSNR_CAP_DB"]

PSNR_CAP_DB = 100.0  # identical images (inf dB) count as this when PSNRs are averaged
BINS = [b[0] for b in SEVERITY_BINS]
GROUPS = ["all"] + BINS
IDENTITY_THRESHOLD = 0.6

SET_DESCRIPTIONS = {
    "pravg": "PrAvg: uint8 mean of N in {5,7,9,11,13} consecutive de-duplicated frames at temporal stride 1-3 "
             "(span <= 13 frames), 256x256 face crops, GT = the temporal centre frame (or FMR-middle, see gt)",
    "vla": "VLA (Chrysos et al. §3.4): window grown around a centre frame while the stop conditions hold "
           "(overlap IoU, PSNR of the running average vs the centre, no oscillation), GT = the centre frame",
    "kernel": "stills convolved with random camera-shake kernels (several sizes; the kernel is known: oracle-PSF "
              "baselines use it)",
    "real": "real blurry images without GT: no-reference sharpness and face detection only",
}

CSV_FIELDS = ["set", "method", "kind", "status", "group", "n", "psnr_blurry", "psnr", "psnr_gain", "ssim", "psnr_y",
              "ssim_y", "lpips", "fid", "id_dist", "same_person_rate", "lm_auc", "lm_failure_rate",
              "detection_rate", "lapvar", "tenengrad", "note"]


# ------------------------------------------------------------------------------------------ summaries


def _cap(v: float) -> float:
    return min(float(v), PSNR_CAP_DB)


def _mean(vals: Sequence[float]) -> float | None:
    vals = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
    return float(np.mean(vals)) if vals else None


def _group(recs: list[dict[str, Any]], sev: dict[str, float]) -> dict[str, Any]:
    g: dict[str, Any] = {"n": len(recs)}
    if not recs:
        return g
    if "psnr" in recs[0]:
        g["psnr_blurry"] = _mean([_cap(sev[r["id"]]) for r in recs])
        g["psnr"] = _mean([_cap(r["psnr"]) for r in recs])
        g["psnr_gain"] = _mean([_cap(r["psnr"]) - _cap(sev[r["id"]]) for r in recs])
        for k in ("ssim", "psnr_y", "ssim_y", "lpips"):
            vals = [r[k] for r in recs if k in r]
            if vals:
                g[k] = _mean([_cap(v) if k.startswith("psnr") else v for v in vals])
    ids = [r["id_dist"] for r in recs if r.get("id_dist") is not None]
    if ids:
        g["id_dist"] = _mean(ids)
        g["same_person_rate"] = float(np.mean([d < IDENTITY_THRESHOLD for d in ids]))
        g["n_id"] = len(ids)
    errs = [r["lm_err"] for r in recs if r.get("lm_err") is not None]
    if errs:
        g["lm_auc"] = auc(errs, MAX_ERROR)
        g["lm_failure_rate"] = failure_rate(errs, MAX_ERROR)
        g["n_lm"] = len(errs)
    det = [r["detected"] for r in recs if "detected" in r]
    if det:
        g["detection_rate"] = float(np.mean(det))
    for k in ("lapvar", "tenengrad"):
        vals = [r[k] for r in recs if k in r]
        if vals:
            g[k] = _mean(vals)
    return g


def _feats(recs: list[dict[str, Any]]) -> np.ndarray | None:
    f = [np.frombuffer(base64.b64decode(r["fid_feat"]), dtype=np.float32) for r in recs if "fid_feat" in r]
    return np.stack(f).astype(np.float64) if len(f) >= 2 else None


def summarise(manifest: dict[str, Any], methods: Sequence[Any], per_sample: dict[str, dict[str, dict[str, Any]]],
              refs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Summaries per set -> method -> group (all + severity bins), plus CED / identity / moments / FID data."""
    from ..metrics.perceptual import feature_statistics, frechet_distance

    sets: dict[str, Any] = {}
    order = list(dict.fromkeys(s["set"] for s in manifest["samples"]))
    for set_name in order:
        samples = [s for s in manifest["samples"] if s["set"] == set_name]
        sev = {s["id"]: s["severity"] for s in samples if s.get("severity") is not None}
        has_gt = bool(sev)
        entry: dict[str, Any] = {"count": len(samples), "has_gt": has_gt, "methods": {}}
        if has_gt:
            entry["bin_counts"] = {b: sum(1 for s in samples if s.get("bin") == b) for b in BINS}
        for m in methods:
            if m.status != "ok":
                continue
            recs_by_id = per_sample.get(m.key, {})
            recs = [recs_by_id[s["id"]] for s in samples if s["id"] in recs_by_id]
            if not recs:
                continue
            res: dict[str, Any] = {"n": len(recs), "complete": len(recs) == len(samples), "groups": {}}
            psf = [r["extra"]["psf_length"] for r in recs if "psf_length" in r.get("extra", {})]
            if psf:
                res["deconvolved"] = sum(1 for v in psf if v > 0)
            res["groups"]["all"] = _group(recs, sev)
            if has_gt:
                by_bin = {s["id"]: s["bin"] for s in samples}
                for b in BINS:
                    res["groups"][b] = _group([r for r in recs if by_bin[r["id"]] == b], sev)
                errs = [r["lm_err"] for r in recs if r.get("lm_err") is not None]
                if errs:
                    t, frac = ced_curve(errs, MAX_ERROR)
                    res["ced"] = {"thresholds": t.tolist(), "fraction": frac.tolist()}
                ids = sorted(r["id_dist"] for r in recs if r.get("id_dist") is not None)
                if ids:
                    res["identity_distances"] = ids
                mom = [r["moments"] for r in recs if "moments" in r]
                if mom:
                    by_n: dict[int, list[list[float]]] = defaultdict(list)
                    for mm in mom:
                        by_n[len(mm)].extend(mm)
                    table = {}
                    for n in sorted(by_n):
                        a = np.asarray(by_n[n], dtype=np.float64)
                        table[str(n)] = {"pairs": len(a), "psnr": float(np.minimum(a[:, 0], PSNR_CAP_DB).mean()),
                                         "ssim": float(a[:, 1].mean()),
                                         "psnr_blurry": float(np.minimum(a[:, 2], PSNR_CAP_DB).mean())}
                    a = np.asarray([p for v in by_n.values() for p in v], dtype=np.float64)
                    table["ALL"] = {"pairs": len(a), "psnr": float(np.minimum(a[:, 0], PSNR_CAP_DB).mean()),
                                    "ssim": float(a[:, 1].mean()),
                                    "psnr_blurry": float(np.minimum(a[:, 2], PSNR_CAP_DB).mean())}
                    res["moments"] = table
                fr, fg = _feats(recs), _feats([refs[r["id"]] for r in recs if r["id"] in refs])
                if fr is not None and fg is not None:
                    res["groups"]["all"]["fid"] = frechet_distance(*feature_statistics(fr), *feature_statistics(fg))
            entry["methods"][m.name] = res
        if has_gt:
            rs = [refs[s["id"]] for s in samples if s["id"] in refs]
            if rs:
                oracle: dict[str, Any] = {"n": len(rs),
                                          "detection_rate": float(np.mean([bool(r.get("face")) for r in rs]))}
                errs = [r["oracle_lm_err"] for r in rs if r.get("face")]
                if errs:
                    t, frac = ced_curve(errs, MAX_ERROR)
                    oracle.update(lm_auc=auc(errs), lm_failure_rate=failure_rate(errs), n_lm=len(errs),
                                  ced={"thresholds": t.tolist(), "fraction": frac.tolist()})
                entry["oracle"] = oracle
        sets[set_name] = entry
    return sets


# ------------------------------------------------------------------------------------------ formatting


def _f(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def _csv_num(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    return f"{v:.6f}" if math.isfinite(v) else ("inf" if v > 0 else "nan")


def _csv(summary: dict[str, Any], methods: Sequence[Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    kinds = {m.name: m.kind for m in methods}
    for set_name, entry in summary.items():
        for mname, res in entry["methods"].items():
            for g in GROUPS if entry["has_gt"] else ["all"]:
                st = res["groups"].get(g)
                if st is None:
                    continue
                row = {"set": set_name, "method": mname, "kind": kinds.get(mname, ""), "status": "ok", "group": g,
                       **st, "note": "" if res["complete"] else f"incomplete: {res['n']} of {entry['count']}"}
                w.writerow([_csv_num(row.get(k)) if k not in ("set", "method", "kind", "status", "group", "note")
                            else row.get(k, "") for k in CSV_FIELDS])
        if "oracle" in entry:
            o = entry["oracle"]
            row = {"set": set_name, "method": "oracle (sharp GT)", "kind": "oracle", "status": "ok", "group": "all",
                   "n": o["n"], "lm_auc": o.get("lm_auc"), "lm_failure_rate": o.get("lm_failure_rate"),
                   "detection_rate": o.get("detection_rate"),
                   "note": "landmark GT is the localiser on the sharp image itself, so its error is 0 by construction"}
            w.writerow([_csv_num(row.get(k)) if k not in ("set", "method", "kind", "status", "group", "note")
                        else row.get(k, "") for k in CSV_FIELDS])
    for m in methods:
        if m.status != "ok":
            row = {"method": m.name, "kind": m.kind, "status": m.status, "note": m.reason}
            w.writerow([row.get(k, "") for k in CSV_FIELDS])
    return buf.getvalue()


def _bin_table(entry: dict[str, Any], key: str, digits: int, gain: bool) -> list[str]:
    counts = entry.get("bin_counts", {})
    head = "| method | all (n = {}) | ".format(entry["count"]) + \
        " | ".join(f"{b} dB (n = {counts.get(b, 0)})" for b in BINS) + " |"
    lines = [head, "|---|" + "---:|" * (len(BINS) + 1)]
    for mname, res in entry["methods"].items():
        cells = []
        for g in GROUPS:
            st = res["groups"].get(g, {})
            v = st.get(key)
            if v is None:
                cells.append("–")
            elif gain:
                cells.append(f"{_f(v, digits)} ({st['psnr_gain']:+.2f})")
            else:
                cells.append(_f(v, digits))
        lines.append(f"| {mname} | " + " | ".join(cells) + " |")
    return lines


def _metrics_table(entry: dict[str, Any], notes: dict[str, str]) -> list[str]:
    lp = "LPIPS ↓" if not notes.get("lpips", "").startswith("unavailable") else "LPIPS"
    fd = "FID ↓" if not notes.get("fid", "").startswith("unavailable") else "FID"
    lines = [f"| method | n | PSNR | SSIM | PSNR-Y | SSIM-Y | {lp} | {fd} | ID dist ↓ | same person | "
             "LM AUC@0.08 ↑ | LM failure ↓ | face detected |", "|---|---:|" + "---:|" * 11]
    for mname, res in entry["methods"].items():
        s = res["groups"]["all"]
        lpv = _f(s.get("lpips"), 4) if "lpips" in s else "unavailable"
        fdv = _f(s.get("fid"), 2) if "fid" in s else "unavailable"
        n = f"{res['n']}" + ("" if res["complete"] else f" of {entry['count']}")
        lines.append(f"| {mname} | {n} | {_f(s.get('psnr'))} | {_f(s.get('ssim'), 4)} | {_f(s.get('psnr_y'))} | "
                     f"{_f(s.get('ssim_y'), 4)} | {lpv} | {fdv} | {_f(s.get('id_dist'), 3)} | "
                     f"{_f(s.get('same_person_rate'), 3)} | {_f(s.get('lm_auc'), 3)} | "
                     f"{_pct(s.get('lm_failure_rate'))} | {_pct(s.get('detection_rate'))} |")
    if "oracle" in entry:
        o = entry["oracle"]
        lines.append(f"| oracle (sharp GT)¹ | {o['n']} | – | – | – | – | – | – | 0 | – | "
                     f"{_f(o.get('lm_auc'), 3)} | "
                     f"{_pct(o.get('lm_failure_rate'))} | {_pct(o.get('detection_rate'))} |")
    return lines


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _plots(out: Path, summary: dict[str, Any]) -> dict[str, list[str]]:
    files: dict[str, list[str]] = defaultdict(list)
    for set_name, entry in summary.items():
        ms = entry["methods"]
        if entry["has_gt"]:
            series = [Series(m, list(range(len(BINS))), [r["groups"].get(b, {}).get("psnr_gain") for b in BINS],
                             dashed=(m == "blurry")) for m, r in ms.items()]
            svg = line_chart(series, title=f"{set_name}: PSNR gain over the blurry input by severity",
                             xlabel="severity bin (blurry-input PSNR, dB)", ylabel="mean PSNR gain (dB)",
                             x_categories=BINS, hline=0.0)
            files[set_name].append(write_svg(out / "plots" / f"{set_name}_psnr_gain.svg", svg).name)
            ced = [Series(m, r["ced"]["thresholds"], r["ced"]["fraction"], dashed=(m == "blurry"), markers=False)
                   for m, r in ms.items() if "ced" in r]
            if "oracle" in entry and "ced" in entry["oracle"]:
                ced.append(Series("oracle (sharp GT)", entry["oracle"]["ced"]["thresholds"],
                                  entry["oracle"]["ced"]["fraction"], dashed=True, markers=False))
            if ced:
                svg = line_chart(ced, title=f"{set_name}: landmark CED (68 points)", xlabel="error / GT box diagonal",
                                 ylabel="fraction of images", xlim=(0.0, MAX_ERROR), ylim=(0.0, 1.0))
                files[set_name].append(write_svg(out / "plots" / f"{set_name}_landmarks_ced.svg", svg).name)
            ids = {m: r["identity_distances"] for m, r in ms.items() if "identity_distances" in r}
            if ids:
                hi = max(1.0, max(max(v) for v in ids.values()))
                grid = np.linspace(0.0, hi, 61)
                series = [Series(m, grid.tolist(), [float(np.mean(np.asarray(v) <= t)) for t in grid],
                                 dashed=(m == "blurry"), markers=False) for m, v in ids.items()]
                svg = line_chart(series, title=f"{set_name}: identity distance to the sharp face (CDF)",
                                 xlabel="dlib embedding distance (< 0.6: same person)", ylabel="fraction of images",
                                 xlim=(0.0, float(hi)), ylim=(0.0, 1.0))
                files[set_name].append(write_svg(out / "plots" / f"{set_name}_identity_cdf.svg", svg).name)
        else:
            names = list(ms)
            det = [ms[m]["groups"]["all"].get("detection_rate") for m in names]
            if any(v is not None for v in det):
                svg = bar_chart(names, [Series("face detected", list(range(len(names))), det)],
                                title=f"{set_name}: face detection rate", xlabel="method", ylabel="fraction of images")
                files[set_name].append(write_svg(out / "plots" / f"{set_name}_detection.svg", svg).name)
            lv = [ms[m]["groups"]["all"].get("lapvar") for m in names]
            svg = bar_chart(names, [Series("Laplacian variance", list(range(len(names))), lv)],
                            title=f"{set_name}: no-reference sharpness", xlabel="method",
                            ylabel="mean variance of the Laplacian")
            files[set_name].append(write_svg(out / "plots" / f"{set_name}_sharpness.svg", svg).name)
    return files


def write_quality_report(out: Path, manifest: dict[str, Any], methods: Sequence[Any], notes: dict[str, str],
                         conventions: dict[str, str], options: Any, command: str = "",
                         extra_header: dict[str, Any] | None = None) -> dict[str, Any]:
    """Summarise the per-sample files of ``out`` and write results.csv / results.json / report.md / plots."""
    sha = manifest["sha256"]
    per: dict[str, dict[str, dict[str, Any]]] = {}
    for m in methods:
        if m.status == "ok":
            per[m.key] = {r["id"]: r for r in read_jsonl(out / "per_sample" / f"{slug(m.key)}.jsonl")
                          if r.get("manifest") == sha}
    refs = {r["id"]: r for r in read_jsonl(out / "per_sample" / "_reference.jsonl") if r.get("manifest") == sha}
    summary = summarise(manifest, methods, per, refs)
    env = environment(getattr(options, "device", "cpu"))
    cb = getattr(options, "crop_border", 0)
    conv = {"psnr": describe("psnr", crop_border=cb) + f"; per-image PSNR averaged, inf capped at {PSNR_CAP_DB:g} dB",
            "psnr_y": describe("psnr", crop_border=cb, test_y_channel=True),
            "ssim": describe("ssim", crop_border=cb, convention="matlab"),
            "ssim_y": describe("ssim", crop_border=cb, test_y_channel=True, convention="matlab"),
            "severity": SEVERITY_CONVENTION + "; gain = restored PSNR - blurry PSNR, per image, averaged",
            **conventions, "lpips": notes.get("lpips", ""), "fid": notes.get("fid", "")}
    if "face_metrics" in notes:
        conv["face_metrics"] = notes["face_metrics"]
    doc = {"header": {"command": command, "environment": env, **(extra_header or {})},
           "manifest": {k: manifest[k] for k in ("sha256", "config", "engine_config", "sources", "counts", "notes")},
           "metric_options": options.pinned() if hasattr(options, "pinned") else {},
           "conventions": conv, "methods": [m.meta() for m in methods], "sets": summary}
    write_text_atomic(out / "results.json", json.dumps(doc, indent=1, default=str) + "\n")
    write_text_atomic(out / "results.csv", _csv(summary, methods))
    plots = _plots(out, summary)
    write_text_atomic(out / "report.md", _markdown(doc, plots, notes))
    return doc


def _markdown(doc: dict[str, Any], plots: dict[str, list[str]], notes: dict[str, str]) -> str:
    h, man, conv = doc["header"], doc["manifest"], doc["conventions"]
    cfg = man["config"]
    lines = ["# facedeblur quality benchmark", ""]
    if h.get("command"):
        lines += [f"Command: `{h['command']}`", ""]
    lines += env_lines(h["environment"])
    counts = ", ".join(f"{k} {v}" for k, v in man["counts"].items())
    lines += [f"* manifest `{man['sha256'][:16]}` ({counts} samples; split `{cfg['split']}`, GT `{cfg['gt']}`, "
              f"max samples per set {cfg['max_samples'] or 'all'}, seed {cfg['seed']}); data: "
              + ", ".join(f"{k} `{v}`" for k, v in man["sources"].items() if v), ""]
    for n in man.get("notes", []):
        lines.append(f"* note: {n}")
    lines += ["## Conventions", ""] + [f"* **{k}**: {v}" for k, v in conv.items() if v] + [""]
    lines += ["## Methods", "", "| method | kind | status | weights / parameters | description |",
              "|---|---|---|---|---|"]
    for m in doc["methods"]:
        w = m["weights"] + (f" (state sha256 {m['weights_sha256'][:12]})" if m.get("weights_sha256") else "") \
            if m["kind"] == "model" else m["key"]
        status = m["status"] if m["status"] == "ok" else f"**{m['status']}**: {m['reason']}"
        lines.append(f"| {m['name']} | {m['kind']} | {status} | {w} | {m['description']} |")
    lines.append("")
    for set_name, entry in doc["sets"].items():
        lines += [f"## Set `{set_name}` ({entry['count']} samples)", "", SET_DESCRIPTIONS.get(set_name, ""), ""]
        if not entry["methods"]:
            lines += ["No method was evaluated on this set.", ""]
            continue
        if entry["has_gt"]:
            lines += ["### PSNR (dB) by severity bin: mean restored PSNR (gain over the blurry input)", ""]
            lines += _bin_table(entry, "psnr", 2, True) + [""]
            lines += ["### SSIM (RGB, MATLAB convention) by severity bin", ""]
            lines += _bin_table(entry, "ssim", 4, False) + [""]
            lines += ["### All metrics (all samples of the set)", ""] + _metrics_table(entry, notes) + [""]
            if "oracle" in entry:
                lines += ["¹ The landmark ground truth is the localiser's output on the sharp image itself (no manual "
                          "annotations), so the oracle's error is 0 by construction; its row shows how often a face "
                          "is found on the sharp images at all.", ""]
            moms = {m: r["moments"] for m, r in entry["methods"].items() if "moments" in r}
            if moms:
                lines += ["### Continuous models: moments (CFMD-GAN Table 4 protocol)", "",
                          "Frame k of N restored at u = k/(N-1), compared with the k-th FMR-ordered sharp frame; "
                          "'blurry' = the blurry input against the same frames.", "",
                          "| model | # of GT (N) | # of pairs | PSNR | SSIM | blurry PSNR | gain |",
                          "|---|---|---:|---:|---:|---:|---:|"]
                for m, t in moms.items():
                    for n, v in t.items():
                        lines.append(f"| {m} | {n} | {v['pairs']} | {v['psnr']:.2f} | {v['ssim']:.4f} | "
                                     f"{v['psnr_blurry']:.2f} | {v['psnr'] - v['psnr_blurry']:+.2f} |")
                lines.append("")
        else:
            lines += ["| method | n | face detected | Laplacian variance | Tenengrad |", "|---|---:|---:|---:|---:|"]
            for m, r in entry["methods"].items():
                s = r["groups"]["all"]
                lines.append(f"| {m} | {r['n']} | {_pct(s.get('detection_rate'))} | {_f(s.get('lapvar'), 1)} | "
                             f"{_f(s.get('tenengrad'), 1)} |")
            lines += ["", "No-reference sharpness rewards any high-frequency energy, ringing and noise included: "
                      "read it together with the images, never alone.", ""]
        for m, r in entry["methods"].items():
            if "deconvolved" in r:
                lines += [f"`{m}` deconvolved {r['deconvolved']} of {r['n']} images; the others showed no clear "
                          "linear-motion peak in the cepstrum and were left unchanged.", ""]
        for p in plots.get(set_name, []):
            lines += [f"![{p}](plots/{p})", ""]
    return "\n".join(lines).rstrip() + "\n"
