"""Draw the documentation's two diagrams into docs/_static/ (committed SVG files).

- ``htlnet_model.svg``: the HTLNet model for a funnel of two stages and a core target (visit ->
  conversion -> spend): the shared embedding, one tower per task, the Label Embedding Units (LEU)
  and the Information Fusion Units (IFU), stop-gradient marked (HTLNet §2, docs/method.md).
- ``gradient_rule.svg``: the gradient rule on the shared embedding (HTLNet §4) in two dimensions:
  a stage gradient that conflicts with the core gradient is projected onto the core gradient's
  normal plane, then its norm is pulled towards the core's.

Run after changing the model or the rule (needs only matplotlib)::

    .venv/bin/python docs/_scripts/make_diagram.py

The output is deterministic (fixed hash salt, no date), so an unchanged drawing gives an unchanged
file.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "_static"

plt.rcParams.update({
    "svg.hashsalt": "sk_htlnet",
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "font.size": 10,
})

COLOURS = {
    "input": "#eeeeee",
    "shared": "#f6c28b",
    "tower": "#a6c8e8",
    "head": "#d9e7f5",
    "leu": "#b7e0b0",
    "ifu": "#d3b9e6",
}
EDGE = "#333333"


def _box(ax, x, y, w, h, text, colour, size=10, weight="normal"):
    """A rounded box with its lower-left corner at (x, y); returns its centre."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                facecolor=colour, edgecolor=EDGE, linewidth=1.1))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, weight=weight,
            linespacing=1.25)
    return x + w / 2, y + h / 2


def _arrow(ax, start, end, dashed=False, colour=EDGE):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, linewidth=1.2,
                                 color=colour, linestyle=(0, (4, 3)) if dashed else "-",
                                 shrinkA=0, shrinkB=0))


def _path(ax, points, dashed=False, colour=EDGE):
    """An orthogonal route through ``points`` ending in an arrow head."""
    xs, ys = zip(*points[:-1])
    ax.plot(xs, ys, color=colour, linewidth=1.2, linestyle=(0, (4, 3)) if dashed else "-",
            solid_capstyle="butt")
    _arrow(ax, points[-2], points[-1], dashed=dashed, colour=colour)


def draw_model(path):
    fig, ax = plt.subplots(figsize=(12.4, 6.9))
    ax.set_xlim(0, 14.1)
    ax.set_ylim(-0.6, 7.05)
    ax.set_aspect("equal")
    ax.axis("off")

    rows = {"visit": 5.6, "conversion": 3.4, "spend": 1.2}  # row centres
    h = 1.0

    # input and shared embedding, spanning every row
    _box(ax, 0.1, 0.7, 1.5, 5.4, "x\n\ncategorical\nids\n\nnumeric\nvalues\n\nmissing\nflags", COLOURS["input"])
    _box(ax, 2.1, 0.7, 1.6, 5.4,
         "shared\nembedding\ne\n\none vector\nper field\n\nthe only\nshared\nparameters", COLOURS["shared"],
         weight="normal")
    _arrow(ax, (1.6, 3.4), (2.1, 3.4))

    tower_x, tower_w = 6.8, 1.7
    head_x, head_w = 9.1, 2.4
    leu_x, leu_w = 12.1, 1.4
    ifu_x, ifu_w = 4.3, 1.9
    bus_x = 13.85

    for t, (name, yc) in enumerate(rows.items(), start=1):
        y0 = yc - h / 2
        core = name == "spend"
        ax.text(tower_x + tower_w / 2, y0 + h + 0.12, f"task {t}: {name}" + (" (core)" if core else " (stage)"),
                ha="center", va="bottom", fontsize=9, style="italic")
        _box(ax, tower_x, y0, tower_w, h, f"tower {t}\nMLP 128-64-32", COLOURS["tower"])
        if core:
            _box(ax, head_x, y0, head_w, h, "linear head\n-> E[spend | x]\n(retransformed)",
                 COLOURS["head"], size=9)
        else:
            _box(ax, head_x, y0, head_w, h, f"logit {t}\n-> P({name} = 1 | x)", COLOURS["head"], size=9)
            _box(ax, leu_x, y0, leu_w, h, f"LEU {t}\nGumbel label\n-> le_{t}", COLOURS["leu"], size=9)
            _arrow(ax, (head_x + head_w, yc), (leu_x, yc), dashed=True)
            ax.text((head_x + head_w + leu_x) / 2, yc + 0.08, "sg", ha="center", va="bottom", fontsize=8)
        _arrow(ax, (tower_x + tower_w, yc), (head_x, yc))
        if t == 1:
            _arrow(ax, (3.7, yc), (tower_x, yc))
            ax.text(5.2, yc + 0.08, "e", ha="center", va="bottom", fontsize=9)
        else:
            preds = ", ".join(str(s) for s in range(1, t))
            _box(ax, ifu_x, y0, ifu_w, h, f"IFU {t}\nattention over\nrep/le {preds} + cand(e)",
                 COLOURS["ifu"], size=8.5)
            _arrow(ax, (3.7, yc), (ifu_x, yc))
            _arrow(ax, (ifu_x + ifu_w, yc), (tower_x, yc))

    # upstream information: (rep_t, le_t) down a bus on the right, into every later IFU (stop-gradient)
    grey = "#555555"
    ax.plot([leu_x + leu_w, bus_x], [rows["visit"]] * 2, color=grey, lw=1.2, ls=(0, (4, 3)))
    ax.plot([leu_x + leu_w, bus_x], [rows["conversion"]] * 2, color=grey, lw=1.2, ls=(0, (4, 3)))
    ax.plot([bus_x, bus_x], [rows["visit"], rows["conversion"] - 1.1], color=grey, lw=1.2, ls=(0, (4, 3)))
    gap1 = (rows["visit"] + rows["conversion"]) / 2 - 0.05
    gap2 = (rows["conversion"] + rows["spend"]) / 2 - 0.05
    _path(ax, [(bus_x, gap1), (ifu_x + ifu_w / 2, gap1), (ifu_x + ifu_w / 2, rows["conversion"] + h / 2)],
          dashed=True, colour=grey)
    _path(ax, [(bus_x, gap2), (ifu_x + ifu_w / 2, gap2), (ifu_x + ifu_w / 2, rows["spend"] + h / 2)],
          dashed=True, colour=grey)
    ax.text(9.0, gap1 + 0.07, "rep_1, le_1", ha="center", va="bottom", fontsize=8.5, color=grey)
    ax.text(9.0, gap2 + 0.07, "rep_1, le_1, rep_2, le_2", ha="center", va="bottom", fontsize=8.5, color=grey)

    ax.text(0.1, 0.45,
            "rep_t: first hidden layer of tower t.  le_t: label embedding of stage t (a label sampled from the "
            "stage's own prediction selects a row).\n"
            "IFU t: attention over the upstream rep (and, separately, le) and its own candidate cand(e); "
            "tower t reads [fused rep, fused le, e].\n"
            "Dashed, sg: stop-gradient, downstream losses never reach an upstream tower.  Every task's "
            "gradient reaches e, combined by the gradient rule (HTLNet §4).",
            ha="left", va="top", fontsize=8.5)
    handles = [Patch(facecolor=COLOURS[k], edgecolor=EDGE, label=label) for k, label in [
        ("shared", "shared embedding"), ("tower", "task tower"), ("leu", "LEU (label embedding)"),
        ("ifu", "IFU (information fusion)")]]
    handles.append(Line2D([], [], color=grey, ls=(0, (4, 3)), label="stop-gradient"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1.045), ncol=5, frameon=False,
              fontsize=8.5)
    fig.savefig(path, bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)


def _vec(ax, v, colour, label, at, origin=(0.0, 0.0), ls="-", ha="left"):
    """Arrow ``origin -> origin + v`` with ``label`` written at ``at``."""
    ax.annotate("", xy=(origin[0] + v[0], origin[1] + v[1]), xytext=origin,
                arrowprops=dict(arrowstyle="-|>", color=colour, lw=2, linestyle=ls, mutation_scale=14,
                                shrinkA=0, shrinkB=0))
    ax.text(*at, label, color=colour, fontsize=10, ha=ha, va="center")


def draw_gradient_rule(path):
    g_c = np.array([2.2, 0.3])
    g_t = np.array([-0.9, 1.0])  # conflicts with the core: g_t . g_c < 0
    proj = g_t - g_t.dot(g_c) / g_c.dot(g_c) * g_c
    gamma, clip = 0.5, 10.0  # gamma larger than the default 0.1, for the picture
    ratio = np.clip(np.linalg.norm(g_c) / np.linalg.norm(proj), 1 / clip, clip)
    scaled = gamma * ratio * proj + (1 - gamma) * proj
    combined = g_c + scaled

    fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.9))
    titles = ["1. direction: a stage gradient that\nconflicts with the core's is projected",
              "2. magnitude: its norm is pulled\ntowards the core's",
              "3. the shared embedding gets\nG_c + sum of the stage gradients"]
    for ax, title in zip(axes, titles):
        ax.set_xlim(-2.0, 2.9)
        ax.set_ylim(-0.75, 2.35)
        ax.set_aspect("equal")
        ax.axhline(0, color="#dddddd", lw=0.8, zorder=0)
        ax.axvline(0, color="#dddddd", lw=0.8, zorder=0)
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_title(title, fontsize=10)
    orange, blue, grey = "#d95f02", "#1f78b4", "#8c8c8c"
    normal = np.array([-g_c[1], g_c[0]]) / np.linalg.norm(g_c)
    ax = axes[0]
    ax.plot(*np.c_[-0.5 * normal, 2.2 * normal], color=grey, lw=1, ls=":")
    ax.text(*(2.1 * normal + [0.12, 0.0]), "normal plane of G_c", color=grey, fontsize=8, va="center")
    _vec(ax, g_c, orange, "G_c (core)", at=(g_c[0] - 0.3, g_c[1] - 0.3))
    _vec(ax, g_t, grey, "G_t (stage)", at=(g_t[0] - 0.08, g_t[1] + 0.12), ls="--", ha="right")
    _vec(ax, proj, blue, "G_t projected", at=(proj[0] + 0.12, proj[1] - 0.25))
    ax.plot(*np.c_[g_t, proj], color=grey, lw=0.8, ls=":")
    ax.text(-1.95, -0.5, "if G_t . G_c < 0:  G_t <- G_t - (G_t . G_c / ||G_c||^2) G_c", fontsize=8)
    ax = axes[1]
    _vec(ax, g_c, orange, "G_c", at=(g_c[0] - 0.2, g_c[1] - 0.3))
    _vec(ax, proj, grey, "before", at=(proj[0] - 0.5, proj[1] - 0.1), origin=(-0.35, 0.0), ls="--", ha="right")
    _vec(ax, scaled, blue, "after", at=(scaled[0] + 0.12, scaled[1]))
    ax.text(-1.95, -0.6, f"r = clip(||G_c|| / ||G_t||, 1/C, C)\nG_t <- gamma r G_t + (1 - gamma) G_t"
            f"   (here gamma = {gamma})", fontsize=8)
    ax = axes[2]
    _vec(ax, g_c, orange, "G_c", at=(g_c[0] - 0.2, g_c[1] - 0.3))
    _vec(ax, scaled, blue, "G_t", at=(g_c[0] + scaled[0] + 0.1, g_c[1] + scaled[1] / 2), origin=tuple(g_c))
    _vec(ax, combined, "#333333", "applied to e", at=(combined[0] / 2 - 0.15, combined[1] / 2 + 0.1),
         ha="right")
    ax.text(-1.95, -0.5, "the core gradient itself is never changed", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)


def main():
    OUT.mkdir(exist_ok=True)
    draw_model(OUT / "htlnet_model.svg")
    draw_gradient_rule(OUT / "gradient_rule.svg")
    for name in ("htlnet_model.svg", "gradient_rule.svg"):
        print(OUT / name)


if __name__ == "__main__":
    main()
