"""Pictures drawn on the server as SVG text, so a page shows them without JavaScript: a run's provenance graph
(input tables → run → output tables, walked back through the runs that wrote the inputs) and bars of use against
an allocation. Pure functions: dicts in, markup out; every label is escaped.
"""

from __future__ import annotations

from html import escape
from urllib.parse import quote

NODE_W, NODE_H, COL_W, ROW_H = 180, 34, 230, 52


def _short(text: str, n: int = 26) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def provenance_graph(trees: list[dict]) -> tuple[dict, list]:
    """Nodes and edges of the graph the provenance ``trees`` describe (each as
    :meth:`~userbatch.facility.service.Facility.provenance` gives
    it). Nodes are keyed ``t:<table>@<version>``, ``r:<run id>`` or ``i:<other input>``, each with its kind,
    label, link and level (0 for the outputs, growing towards the oldest inputs); edges go from input to output.

    Parameters
    ----------
    trees : list of dict
        Provenance trees, one per output table of a run.

    Returns
    -------
    tuple of (dict, list)
        ``nodes`` (key → dict) and ``edges`` (list of ``(from_key, to_key)``), each edge once.
    """
    nodes: dict[str, dict] = {}
    edges: list[tuple[str, str]] = []

    def add(key: str, level: int, **attrs) -> str:
        node = nodes.setdefault(key, {"key": key, "level": level, **attrs})
        node["level"] = max(node["level"], level)
        return key

    def edge(a: str, b: str) -> None:
        if (a, b) not in edges:
            edges.append((a, b))

    def walk(node: dict, level: int) -> str:
        name, ver = node["table"], node.get("version")
        label = f"{name}@v{ver}" if ver is not None else name
        tkey = add(f"t:{name}@{ver}", level, kind="table", label=label, href=f"/ui/tables/{quote(name)}",
                   title=node.get("note") or label)
        run_id = node.get("run_id")
        if not run_id:
            return tkey
        rkey = add(f"r:{run_id}", level + 1, kind="run", label=f"run {run_id}",
                   href=f"/ui/runs/{quote(run_id)}", title=f"run {run_id}: {node.get('job') or ''} "
                   f"by {node.get('user') or '?'}")
        edge(rkey, tkey)
        for inp in node.get("inputs") or []:
            if inp.get("table"):
                edge(walk(inp, level + 2), rkey)
            else:
                text = ", ".join(f"{k}={v}" for k, v in sorted(inp.items()))
                edge(add(f"i:{text}", level + 2, kind="input", label=text, href=None, title=text), rkey)
        return tkey

    for tree in trees:
        walk(tree, 0)
    return nodes, edges


def provenance_svg(trees: list[dict]) -> str:
    """The provenance graph of :func:`provenance_graph` as an SVG element: oldest inputs left, outputs right;
    each table and run is a link to its page.

    Parameters
    ----------
    trees : list of dict
        Provenance trees, one per output table of a run.

    Returns
    -------
    str
        ``<svg>`` markup, or an empty string when there is nothing to draw.
    """
    nodes, edges = provenance_graph(trees)
    if not nodes:
        return ""
    top = max(n["level"] for n in nodes.values())
    columns: dict[int, list[dict]] = {}
    for n in nodes.values():
        columns.setdefault(n["level"], []).append(n)
    pos = {}
    for level, col in columns.items():
        for i, n in enumerate(sorted(col, key=lambda n: n["key"])):
            pos[n["key"]] = (10 + (top - level) * COL_W, 10 + i * ROW_H)
    width = 20 + top * COL_W + NODE_W
    height = 20 + max(len(c) for c in columns.values()) * ROW_H
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="provenance" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="provenance graph">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>']
    for a, b in edges:
        (x1, y1), (x2, y2) = pos[a], pos[b]
        out.append(f'<line x1="{x1 + NODE_W}" y1="{y1 + NODE_H / 2}" x2="{x2}" y2="{y2 + NODE_H / 2}" '
                   'stroke="#555" stroke-width="1.2" marker-end="url(#arrow)"/>')
    fills = {"table": "#e8f0fe", "run": "#fff4d6", "input": "#eeeeee"}
    for key, n in nodes.items():
        x, y = pos[key]
        shape = (f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="{12 if n["kind"] == "run" else 3}" '
                 f'fill="{fills[n["kind"]]}" stroke="#446"/>'
                 f'<text x="{x + NODE_W / 2}" y="{y + NODE_H / 2 + 4}" text-anchor="middle" font-size="12">'
                 f'{escape(_short(n["label"]))}</text><title>{escape(n["title"])}</title>')
        cls = f'node {n["kind"]}'
        if n["href"]:
            out.append(f'<a class="{cls}" href="{escape(n["href"])}" data-key="{escape(key)}">{shape}</a>')
        else:
            out.append(f'<g class="{cls}" data-key="{escape(key)}">{shape}</g>')
    out.append("</svg>")
    return "".join(out)


def usage_bars_svg(rows: list[dict], unit: str, legend: str | None = None) -> str:
    """Horizontal bars of use against an allocation, one per row: used (solid), reserved (light, after it) and
    the allocation as a red line.

    Parameters
    ----------
    rows : list of dict
        Each ``{"label": str, "used": float, "reserved": float, "limit": float}``.
    unit : str
        What the numbers count, for the legend (``"core-hours"``, ``"GB"``).
    legend : str, optional
        What the dark and light parts mean; by default used and reserved by queued and running runs.

    Returns
    -------
    str
        ``<svg>`` markup, or an empty string for no rows.
    """
    if not rows:
        return ""
    label_w, bar_w, row_h = 170, 420, 30
    top = max(max(r["limit"], r["used"] + r.get("reserved", 0.0)) for r in rows) or 1.0
    scale = bar_w / (top * 1.08)
    width, height = label_w + bar_w + 180, 16 + row_h * len(rows) + 22
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="usage" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="use against allocation ({escape(unit)})">']
    for i, r in enumerate(rows):
        y = 10 + i * row_h
        used_w, res_w, lim_x = r["used"] * scale, r.get("reserved", 0.0) * scale, label_w + r["limit"] * scale
        out.append(f'<text x="0" y="{y + 15}" font-size="12">{escape(_short(r["label"], 24))}</text>'
                   f'<rect x="{label_w}" y="{y}" width="{bar_w}" height="20" fill="#f4f4f4"/>'
                   f'<rect class="used" x="{label_w}" y="{y}" width="{used_w:.1f}" height="20" fill="#3a7bd5"/>'
                   f'<rect class="reserved" x="{label_w + used_w:.1f}" y="{y}" width="{res_w:.1f}" height="20" '
                   f'fill="#9cc3f5"/>'
                   f'<line class="allocation" x1="{lim_x:.1f}" x2="{lim_x:.1f}" y1="{y - 3}" y2="{y + 23}" '
                   f'stroke="#c00" stroke-width="2"/>'
                   f'<text x="{label_w + bar_w + 8}" y="{y + 15}" font-size="12">'
                   f'{r["used"]:,.2f} + {r.get("reserved", 0.0):,.2f} of {r["limit"]:,.2f}</text>')
    y = 10 + len(rows) * row_h + 6
    legend = legend or "used (dark), reserved by queued and running runs (light)"
    out.append(f'<text x="{label_w}" y="{y + 10}" font-size="11" fill="#555">{escape(unit)}: {escape(legend)}, '
               'allocation (red line)</text></svg>')
    return "".join(out)


def usage_over_time_svg(series: list[dict]) -> str:
    """Cumulative core-hours over the period, one step line per user or group, each with its allocation as a
    dashed line of the same colour.

    Parameters
    ----------
    series : list of dict
        Each ``{"subject_kind", "subject", "allocation": float, "points": [[ISO time, cumulative], ...]}``.

    Returns
    -------
    str
        ``<svg>`` markup, or an empty string when nothing was charged yet.
    """
    from datetime import datetime

    drawn = [s for s in series if s.get("points")]
    if not drawn:
        return ""
    times = [datetime.fromisoformat(t).timestamp() for s in drawn for t, _ in s["points"]]
    t0, t1 = min(times), max(times)
    span = (t1 - t0) or 1.0
    top = max(max(s["allocation"], s["points"][-1][1]) for s in drawn) * 1.08 or 1.0
    left, w, h, pad = 60, 560, 200, 20
    width, height = left + w + 190, h + 2 * pad + 16 * len(drawn)
    colours = ["#3a7bd5", "#d5803a", "#3ad57b", "#a03ad5", "#d53a6a"]

    def xy(t, v):
        return left + (t - t0) / span * w, pad + h - v / top * h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="usage-over-time" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="core-hours used over time">',
           f'<line x1="{left}" y1="{pad + h}" x2="{left + w}" y2="{pad + h}" stroke="#888"/>',
           f'<line x1="{left}" y1="{pad}" x2="{left}" y2="{pad + h}" stroke="#888"/>',
           f'<text x="{left - 6}" y="{pad + 4}" font-size="11" text-anchor="end">{top / 1.08:,.2f}</text>',
           f'<text x="{left - 6}" y="{pad + h}" font-size="11" text-anchor="end">0</text>']
    for i, s in enumerate(drawn):
        c = colours[i % len(colours)]
        pts, last = [], 0.0
        for t, v in s["points"]:
            x, y = xy(datetime.fromisoformat(t).timestamp(), v)
            pts += [f"{x:.1f},{xy(0, last)[1]:.1f}", f"{x:.1f},{y:.1f}"]  # a step: charges arrive at once
            last = v
        pts.append(f"{left + w:.1f},{xy(0, last)[1]:.1f}")
        ay = xy(0, s["allocation"])[1]
        label = f'{s["subject_kind"]} {s["subject"]}'
        out.append(f'<polyline class="used-over-time" data-subject="{escape(label)}" points="{" ".join(pts)}" '
                   f'fill="none" stroke="{c}" stroke-width="2"/>'
                   f'<line class="allocation" x1="{left}" x2="{left + w}" y1="{ay:.1f}" y2="{ay:.1f}" stroke="{c}" '
                   f'stroke-dasharray="6 4"/>'
                   f'<text x="{left + w + 8}" y="{pad + 12 + 16 * i}" font-size="12" fill="{c}">'
                   f'{escape(_short(label, 20))}: {last:,.3f} of {s["allocation"]:,.2f}</text>')
    out.append(f'<text x="{left}" y="{pad + h + 16}" font-size="11" fill="#555">'
               f'{escape(datetime.fromtimestamp(t0).strftime("%Y-%m-%d %H:%M"))} .. '
               f'{escape(datetime.fromtimestamp(t1).strftime("%Y-%m-%d %H:%M"))}: core-hours charged (solid), '
               'allocation (dashed)</text></svg>')
    return "".join(out)


#: Colour stops for density, low to high (viridis' ends and middle).
_DENSITY_STOPS = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))


def _density_colour(f: float) -> str:
    f = min(max(f, 0.0), 1.0) * (len(_DENSITY_STOPS) - 1)
    i = min(int(f), len(_DENSITY_STOPS) - 2)
    a, b, t = _DENSITY_STOPS[i], _DENSITY_STOPS[i + 1], f - i
    return "#%02x%02x%02x" % tuple(round(a[k] + (b[k] - a[k]) * t) for k in range(3))


def partition_map_svg(partitions: list[tuple[int, int, int]]) -> str:
    """A table's partitions on the sky (plate carrée, RA increasing to the left as on the sky), each HEALPix pixel
    drawn as its true quadrilateral and coloured by rows per square degree (log scale); hovering names the pixel.

    Parameters
    ----------
    partitions : list of (int, int, int)
        ``(order, pixel, rows)`` of each partition.

    Returns
    -------
    str
        ``<svg>`` markup, or an empty string for a table without partitions.
    """
    import math

    import numpy as np
    from cdshealpix.nested import vertices

    if not partitions:
        return ""
    w, h, left, top = 720, 360, 40, 10
    dens = [rows / (41252.96 / (12 * 4 ** order)) for order, _, rows in partitions]
    lo, hi = math.log10(max(min(dens), 1e-9)), math.log10(max(max(dens), 1e-9))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="partition-map" width="{w + left + 10}" '
           f'height="{h + top + 40}" viewBox="0 0 {w + left + 10} {h + top + 40}" role="img" '
           f'aria-label="partitions on the sky, coloured by density">',
           f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="#f4f4f4" stroke="#888"/>',
           f'<clipPath id="sky"><rect x="{left}" y="{top}" width="{w}" height="{h}"/></clipPath>',
           '<g clip-path="url(#sky)">']
    for (order, pixel, rows), d in zip(partitions, dens):
        # edges sampled (HEALPix edges are curves), a pole vertex widened to the pole's line in this projection
        lon, lat = vertices(np.array([pixel], dtype=np.uint64), order, step=max(1, 2 ** max(0, 5 - order)))
        ra, dec = np.degrees(lon.to_value("rad")[0]), np.degrees(lat.to_value("rad")[0])
        ra = np.unwrap(ra, period=360.0)  # continuous across RA = 0
        at_pole = np.abs(dec) > 89.999
        if at_pole.any():
            k = int(np.flatnonzero(at_pole)[0])
            before, after = ra[k - 1], ra[(k + 1) % len(ra)]
            ra = np.concatenate([ra[:k], [before, after], ra[k + 1:]])
            dec = np.concatenate([dec[:k], [dec[k], dec[k]], dec[k + 1:]])
        colour = _density_colour((math.log10(max(d, 1e-9)) - lo) / ((hi - lo) or 1.0))
        for shift in (0.0, 360.0, -360.0):  # a pixel across RA = 0 is drawn on both edges
            xs = left + (360.0 - (ra + shift)) / 360.0 * w
            if xs.max() < left or xs.min() > left + w:
                continue
            ys = top + (90.0 - dec) / 180.0 * h
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
            out.append(f'<polygon class="partition" data-order="{order}" data-pixel="{pixel}" data-rows="{rows}" '
                       f'points="{pts}" fill="{colour}" stroke="#333" stroke-width="0.3">'
                       f'<title>Norder={order} Npix={pixel}: {rows:,} rows, {d:,.1f} per deg²</title></polygon>')
    out.append("</g>")
    for ra_tick in (0, 90, 180, 270, 360):
        x = left + (360 - ra_tick) / 360 * w
        out.append(f'<text x="{x:.0f}" y="{top + h + 14}" font-size="11" text-anchor="middle">{ra_tick}°</text>')
    for dec_tick in (-90, 0, 90):
        y = top + (90 - dec_tick) / 180 * h
        out.append(f'<text x="{left - 4}" y="{y + 4:.0f}" font-size="11" text-anchor="end">{dec_tick}°</text>')
    out.append(f'<text x="{left}" y="{top + h + 30}" font-size="11" fill="#555">RA (left: 360°) and Dec; colour: rows '
               f'per square degree, {10 ** lo:,.1f} (dark) to {10 ** hi:,.1f} (yellow), log scale</text></svg>')
    return "".join(out)


__all__ = ["partition_map_svg", "provenance_graph", "provenance_svg", "usage_bars_svg", "usage_over_time_svg"]
