"""Render a plan (the dict from `plan_command`) as rich tables for people; --json prints the dict itself."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .units import fmt_number, human_count

# Short setup names for the table; the JSON carries the long labels.
_SHORT = {
    "ddp": "DDP",
    "zero1": "ZeRO-1",
    "zero2": "ZeRO-2",
    "zero3": "ZeRO-3",
    "zero3_offload_optimizer": "ZeRO-3+offload opt",
    "zero3_offload": "ZeRO-3+offload all",
    "fsdp": "FSDP",
}


def _num(x, fmt: str | None = None) -> str:
    if x is None:
        return "-"
    return format(x, fmt) if fmt else fmt_number(x)


def _compute_table(plan: dict) -> Group:
    c = plan["compute"]
    table = Table(title="compute (training FLOPs = 6 * P * T)", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("FLOPs", _num(c["flops"], ".3e"))
    table.add_row("GPU-hours", _num(c["gpu_hours"]))
    table.add_row("wall-clock days", _num(c["wall_days"]))
    table.add_row("cost", _num(c["cost"]))
    if "arithmetic" in c:
        note = Text(c["arithmetic"], style="dim")
    else:
        note = Text(f"missing: {', '.join(c.get('missing', []))}", style="dim")
    return Group(table, note)


def _memory_table(plan: dict) -> Table | None:
    m = plan["memory"]
    if "per_gpu" not in m:
        return None
    n = m["numbers"]
    title = (
        f"memory per GPU, GiB: {m['method']}, {m['precision']}, {m['gpus']} GPU(s), "
        f"batch {n['batch_size']} x {n['seq_len']} tokens"
    )
    table = Table(title=title)
    for col in ("setup", "weights", "grads", "optim", "activ", "other", "peak", "fits", "CPU/node"):
        table.add_column(col, justify="left" if col == "setup" else "right", no_wrap=col == "setup")
    for row in m["per_gpu"]:
        fits = {True: "[green]yes[/]", False: "[red]no[/]", None: "?"}[row["fits"]]
        table.add_row(
            _SHORT.get(row["setup"], row["setup"]),
            f"{row['weights_gib']:.2f}",
            f"{row['gradients_gib']:.2f}",
            f"{row['optimizer_gib']:.2f}",
            f"{row['activations_gib']:.2f}",
            f"{row['transient_gib'] + row['overhead_gib'] + row['null_space_gib']:.2f}",
            f"[bold]{row['peak_gib']:.2f}[/]",
            fits if row["refused"] is None else "[red]no*[/]",
            "-" if row["cpu_gib_per_node"] is None else f"{row['cpu_gib_per_node']:.1f}",
        )
    gpu = plan.get("gpu")
    table.caption = (
        f"P={human_count(n['P'])}, trainable={human_count(n['Pt_trainable'])}, "
        f"largest module={human_count(n['L_largest_module'])}; "
        + (f"{gpu['name']}: {gpu['memory_gib']:g} GiB" if gpu else "no --gpu: fit not checked")
    )
    if n.get("null_space"):
        row = m["per_gpu"][0]  # the same moments and bases in every setup
        table.caption += (
            f"\ngeneral_null_space ({n['null_space']}): {row['null_space_setup_gib']:.2f} GiB before training "
            f"(weights + moments), bases {row['null_space_gib']:.2f} GiB in 'other'"
        )
    if any(r["refused"] for r in m["per_gpu"]):
        table.caption += "\n*: general_null_space runs in one process or under DDP only"
    return table


def _data_table(plan: dict) -> Table | None:
    data = plan.get("data")
    if not data:
        return None
    table = Table(title=f"data ({data['token_count']})")
    for col in ("source", "role", "kind", "samples", "tokens", "by speaker", "languages"):
        table.add_column(col, justify="right" if col in ("samples", "tokens") else "left")
    for src in data["sources"]:
        speakers = src.get("tokens_by_speaker") or {}
        table.add_row(
            src["path"],
            src["role"],
            src["kind"],
            f"{src['samples']:,}",
            f"{src['tokens']:,}",
            ", ".join(f"{k} {v:,}" for k, v in speakers.items()) or "-",
            ", ".join(src["languages"]["guess"]) or "-",
        )
    return table


def _strategy_table(plan: dict) -> Table:
    table = Table(title="strategy plan (ranked; each reason with its source)")
    for col in ("#", "strategy", "verdict", "reasons"):
        table.add_column(col)
    for row in plan["advice"]["strategies"]:
        reasons = Text()
        for r in row["reasons"]:
            tag = " [heuristic]" if r["heuristic"] else ""
            reasons.append(f"{r['points']:+d} {r['reason']}{tag}\n", style=None)
            reasons.append(f"   source: {r['source']}\n", style="dim")
        table.add_row(str(row["rank"]), row["strategy"], row["verdict"], reasons)
    return table


def _choices_table(plan: dict) -> Table:
    advice = plan["advice"]
    table = Table(title="choices", show_header=True)
    for col in ("topic", "advice", "source"):
        table.add_column(col)

    def add(topic: str, item: dict, text: str) -> None:
        tag = " [heuristic]" if item.get("heuristic") else ""
        table.add_row(topic, text + tag, Text(item.get("source", ""), style="dim"))

    boc = advice["base_or_chat"]
    add("base or chat", boc, f"{boc['choice']}: {boc['reason']}")
    for mix in advice["mix"]:
        extra = f" ({mix['current']})" if mix.get("current") else ""
        add(f"mix ({mix['stage']})", mix, f"{mix['start_point']}{extra}; {mix['next']}")
    method = advice["method"]
    setup = f" with {method['setup']}" if method.get("setup") else ""
    add("method", method, f"{method['choice'] or '-'}{setup}: {method['reason']}")
    precision = advice["precision"]
    add(
        "precision", precision, f"{precision['choice']}" + (f": {precision['reason']}" if "reason" in precision else "")
    )
    return table


def _assumptions(plan: dict) -> Text:
    text = Text("assumptions\n", style="bold")
    for key, value in plan["assumptions"].items():
        if key == "notes":
            for note in value:
                text.append(f"  note: {note}\n")
        elif value:
            text.append(f"  {key}: {value}\n", style="dim")
    return text


def render_plan(plan: dict, console: Console | None = None) -> None:
    """Print the plan as tables: data, compute, memory, strategies, choices, assumptions."""
    console = console or Console()
    parts = [
        _data_table(plan),
        _compute_table(plan),
        _memory_table(plan),
        _strategy_table(plan),
        _choices_table(plan),
        _assumptions(plan),
    ]
    console.print(Group(*(p for p in parts if p is not None)))
