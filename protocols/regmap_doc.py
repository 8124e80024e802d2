"""A register map as a Markdown reference page (``docs/register-map.md`` is made from it)."""

from __future__ import annotations

from protocols.registers import Block, DataType, Point, RegisterMap, Table

_TABLE_TITLE = {
    Table.DISCRETE_INPUT: "Discrete inputs (function 2)",
    Table.COIL: "Coils (functions 1, 5, 15)",
    Table.INPUT_REGISTER: "Input registers (function 4)",
    Table.HOLDING_REGISTER: "Holding registers (functions 3, 6, 16)",
}


def register_map_markdown(register_map: RegisterMap) -> str:
    """The map as Markdown: one table per Modbus table, addresses 0-based."""
    lines = [
        f"# Register map `{register_map.id}` (version {register_map.version})",
        "",
        f"{register_map.description}.",
        "",
        "Generated from `protocols/reference.py` by `boilertwin sim register-map`;",
        "do not edit by hand. Addresses are 0-based protocol addresses. 32-bit values use",
        f"word order `{register_map.word_order}`; strings are ASCII, two characters per register,",
        "padded with NUL. Raw values are multiplied by the scale to give engineering units.",
        "Reads may span unmapped addresses only inside one block.",
        "",
        f"Map digest (SHA-256 of its canonical JSON): `{register_map.digest()}`",
        "",
    ]
    for table in Table:
        points = [p for p in register_map.points if p.table is table]
        if not points:
            continue
        blocks = ", ".join(_block(b) for b in register_map.blocks if b.table is table)
        lines += [
            f"## {_TABLE_TITLE[table]}",
            "",
            f"Readable blocks: {blocks or 'none declared'}.",
            "",
        ]
        lines += [
            "| address | name | type | scale | unit | access | description |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [_row(p) for p in points]
        lines.append("")
        for point in points:
            if point.labels:
                values = ", ".join(f"{raw} = {label}" for raw, label in point.labels)
                lines += [f"`{point.name}` values: {values}.", ""]
    return "\n".join(lines)


def _block(block: Block) -> str:
    return f"{block.start}-{block.end - 1}"


def _row(point: Point) -> str:
    address = str(point.address) if point.count == 1 else f"{point.address}-{point.end - 1}"
    kind = f"string({point.length * 2})" if point.type is DataType.STRING else point.type.value
    scale = "" if point.scale == 1 else f"{point.scale:g}"
    limits = ""
    if point.minimum is not None or point.maximum is not None:
        limits = f" (writable {point.minimum:g}..{point.maximum:g})"
    return (
        f"| {address} | `{point.name}` | {kind} | {scale} | {point.unit} | {point.access.value} "
        f"| {point.description}{limits} |"
    )
