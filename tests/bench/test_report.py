"""Tables from a synthetic results document: ratios, OOM cells, the matmul yardstick."""
from fastcontrast.bench import report
from fastcontrast.bench.cases import Case


def record(case, impl, role, status="ok", time_s=None, extra=None, **kw):
    return {"case": case.to_dict(), "impl": impl, "role": role, "status": status,
            "time_s": time_s, "extra_bytes": extra, **kw}


def doc_with(records):
    doc = report.new_document(["fastcontrast", "bench"], {"repeats": 3, "warmup": 1,
                                                          "isolation": "process"})
    doc["records"] = records
    return doc


def test_wide_table_ratios_oom_and_matmul_share():
    small, big = Case("supcon", 1024), Case("supcon", 2048)
    doc = doc_with([
        record(small, "fastcontrast-torch", "subject", time_s=0.5, extra=100 * 2**20),
        record(small, "pml", "baseline", time_s=10.0, extra=4 * 2**30),
        record(small, "matmul", "yardstick", time_s=0.05),
        record(big, "fastcontrast-torch", "subject", time_s=2.0, extra=200 * 2**20),
        record(big, "pml", "baseline", status="oom", extra=17 * 2**30, cap_bytes=19 * 2**30),
        record(big, "matmul", "yardstick", status="skipped", error="x"),
    ])
    header, rows = report.wide_rows(doc)
    cells = [dict(zip(header, row)) for row in rows]
    assert cells[0]["speed-up vs pml"] == "20.0×" and cells[0]["memory ÷ vs pml"] == "41.0×"
    assert cells[0]["fastcontrast-torch time"] == "500.0 ms"
    assert cells[0]["pml memory"] == "4.00 GiB"
    # 8·B·B·D / 0.5 s against 2·B·B·D / 0.05 s: 40 %
    assert cells[0]["fastcontrast-torch % of matmul FLOP/s"].startswith("40%")
    assert cells[1]["pml time"] == "OOM (cap 19.00 GiB)"
    assert cells[1]["speed-up vs pml"] == "OOM → ∞" and cells[1]["matmul time"] == "n/a"
    md = report.markdown_report(doc, "x.json")
    assert "| supcon | 2048 | 128 | float32 |" in md and "x.json" in md


def test_long_table_and_csv_keep_every_record(tmp_path):
    c = Case("contrastive", 64)
    doc = doc_with([record(c, "fastcontrast-torch", "subject", time_s=0.01, extra=2**20),
                    record(c, "dense-eager", "baseline", status="timeout", error="t")])
    header, rows = report.comparison_rows(doc)
    assert rows[0][header.index("speed-up vs dense-eager")] == "timeout → ∞"
    report.write_csv(doc, tmp_path / "r.csv")
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 3
    assert report.plot(doc, tmp_path, "p") == []          # one batch size: nothing to plot


def test_formatting_units():
    assert report.fmt_time(19.2) == "19.20 s" and report.fmt_time(0.0004) == "400 µs"
    assert report.fmt_bytes(5.2 * 2**30) == "5.20 GiB" and report.fmt_bytes(3 * 2**20) == "3 MiB"
    assert report.fmt_ratio(250) == "250×" and report.fmt_ratio(2.5) == "2.50×"
