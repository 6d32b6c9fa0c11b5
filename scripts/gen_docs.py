#!/usr/bin/env python3
"""gen_docs.py - writes nnparity's man pages and its bash completion from the built CLI's help.

The help text is the one source: `nnparity --help` names the commands, `nnparity CMD --help`
gives each command's usage, description and options. This script only reshapes it:

    gen_docs.py man BIN DIR          DIR/nnparity.1 and DIR/nnparity-CMD.1 for every command
    gen_docs.py completion BIN FILE  a bash completion for the commands and their options

How a help text is read (what the commands print today; anything else is kept as prose):
  - "usage: ..." lines (and lines indented under them) are the synopsis;
  - a block (lines between blank lines) is a list when its entries are lines indented by two
    spaces, a name, two or more spaces and a description (continued on deeper-indented lines),
    and an entry names an option ("-x", "--name ARG") or the block is headed "something:";
    an unindented line inside such a block heads a group of options;
  - other blocks are paragraphs; their indented lines are kept as they are;
  - text after the first option list goes to EXIT STATUS from a line starting "Exit codes",
    to NOTES otherwise.
"""
import re
import subprocess
import sys
from pathlib import Path

ENTRY = re.compile(r"^  (\S.*?)(?:\s{2,}(\S.*))?$")


def help_text(binary, *args):
    p = subprocess.run([binary, *args, "--help"], capture_output=True, text=True, check=False)
    if p.returncode != 0 or not p.stdout.strip():
        sys.exit(f"gen_docs.py: `{binary} {' '.join(args)} --help` failed "
                 f"(exit {p.returncode}): {p.stderr.strip()}")
    return p.stdout


def blocks_of(text):
    block = []
    for line in text.rstrip().splitlines():
        if line.strip():
            block.append(line.rstrip())
        elif block:
            yield block
            block = []
    if block:
        yield block


def as_list(block):
    """The block as [(heading or None, [(tag, [description lines])])], or None for prose."""
    groups, entry, any_option = [], None, False
    headed = block[0][:1] != " " and block[0].endswith(":")
    for line in block:
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            if entry is None and groups and not groups[-1][1]:
                return None  # two unindented lines in a row: prose
            groups.append((line.strip(), []))
            entry = None
        elif indent == 2 and ENTRY.match(line):
            tag, desc = ENTRY.match(line).groups()
            any_option |= tag.startswith("-")
            entry = (tag, [desc] if desc else [])
            if not groups:
                groups.append((None, []))
            groups[-1][1].append(entry)
        elif indent > 2 and entry is not None:
            entry[1].append(line.strip())
        else:
            return None
    if not any(entries for _, entries in groups) or not (any_option or headed):
        return None
    return groups


def parse(text):
    """A help text as {'usage': [...], 'sections': [(name, kind, content)]}: kind 'text'
    (a list of blocks of lines) or 'list' (groups as as_list gives them)."""
    usage, sections, seen_list = [], [], False

    def add(name, kind, content):
        if sections and sections[-1][0] == name and sections[-1][1] == kind:
            sections[-1][2].extend(content)
        else:
            sections.append((name, kind, list(content)))

    for block in blocks_of(text):
        if block[0].lower().startswith("usage:"):
            usage.append(block[0].split(":", 1)[1].strip())
            rest = block[1:]
            while rest and rest[0].startswith(" ") and not usage[-1].endswith("."):
                usage.append(rest.pop(0).strip())
            if rest:
                block = rest
            else:
                continue
        groups = as_list(block)
        if groups is not None:
            seen_list = True
            first = groups[0][0]
            if first and first.endswith(":"):
                name = first[:-1].upper()
                groups[0] = (None, groups[0][1])
            else:
                name = "OPTIONS"
            add(name, "list", groups)
        elif not seen_list:
            add("DESCRIPTION", "text", [block])
        else:
            at = next((i for i, l in enumerate(block)
                       if re.match(r"exit (codes|status)\b", l, re.I)), None)
            if at is None:
                add("NOTES", "text", [block])
            else:
                if at:
                    add("NOTES", "text", [block[:at]])
                add("EXIT STATUS", "text", [block[at:]])
    return {"usage": usage, "sections": sections}


# ---------------------------------------------------------------------------------------------
# roff


def esc(text):
    """Text for a roff line: backslashes and minus signs escaped, no leading control char."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def tag_roff(tag):
    """An option's tag: option names bold, their arguments italic."""
    out = []
    for word in tag.split(" "):
        comma = "," if word.endswith(",") else ""
        word = word.rstrip(",")
        font = "B" if word.startswith("-") else "I"
        out.append(f"\\f{font}{esc(word)}\\fR{comma}")
    return " ".join(out)


def text_roff(blocks):
    """Paragraphs; indented lines stay as they are, unfilled."""
    lines = []
    for block in blocks:
        lines.append(".PP")
        literal = False
        for line in block:
            if line.startswith(" ") != literal:
                literal = not literal
                lines.append(".nf" if literal else ".fi")
            lines.append(esc(line) if literal else esc(line.strip()))
        if literal:
            lines.append(".fi")
    return lines


def list_roff(groups, commands_page):
    lines = []
    for heading, entries in groups:
        if heading:
            lines.append(f".SS {esc(heading)}")
        for tag, desc in entries:
            lines.append(".TP")
            if commands_page and not tag.startswith("-"):
                lines.append(f"\\fB{esc(tag)}\\fR")
            else:
                lines.append(tag_roff(tag))
            lines.extend(esc(d) for d in desc)
    return lines


def man_page(page, title, summary, version, parsed, see_also):
    out = [f'.\\" {page}.1 - generated from `{title} --help` by scripts/gen_docs.py; do not edit.',
           f'.TH "{esc(page.upper())}" "1" "" "nnparity {esc(version)}" "nnparity Manual"',
           # like the help text: ragged right, no hyphenation (an option is never split)
           ".ad l", ".nh",
           ".SH NAME", f"{esc(page)} \\- {esc(summary)}", ".SH SYNOPSIS"]
    words = len(title.split())
    for i, u in enumerate(parsed["usage"]):
        if i:
            out.append(".br")
        parts = u.split(" ")
        head, tail = " ".join(parts[:words]), " ".join(parts[words:])
        out.append(f"\\fB{esc(head)}\\fR {esc(tail)}".rstrip())
    for name, kind, content in parsed["sections"]:
        out.append(f'.SH "{esc(name)}"' if " " in name else f".SH {esc(name)}")
        if kind == "text":
            out.extend(text_roff(content)[1:] if content else [])
        else:
            out.extend(list_roff(content, name == "COMMANDS"))
    if see_also:
        out.append(".SH \"SEE ALSO\"")
        out.append(",\n".join(f"\\fB{esc(p)}\\fR(1)" for p in see_also))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# what both outputs need


def commands_of(top):
    """[(name, summary)] from the top-level help's "commands:" list, `help` left out."""
    for name, kind, groups in top["sections"]:
        if name == "COMMANDS" and kind == "list":
            return [(tag, " ".join(desc)) for _, entries in groups for tag, desc in entries
                    if tag != "help"]
    sys.exit("gen_docs.py: `nnparity --help` lists no commands (no 'commands:' block)")


def options_of(parsed):
    """[(option, argument or None)] of every option entry: '-j, --threads N' gives
    ('-j', 'N') and ('--threads', 'N')."""
    out = []
    for name, kind, groups in parsed["sections"]:
        if kind != "list" or name == "COMMANDS":
            continue
        for _, entries in groups:
            for tag, _ in entries:
                if not tag.startswith("-"):
                    continue
                alternatives = tag.split(", ")
                words = alternatives[-1].split(" ", 1)
                arg = words[1] if len(words) > 1 else None
                out.extend((alt.split(" ", 1)[0], arg) for alt in alternatives)
    return out


def collect(binary):
    top = parse(help_text(binary))
    version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             check=False).stdout.split()
    version = version[-1] if version else ""
    cmds = [(name, summary, parse(help_text(binary, name))) for name, summary in
            commands_of(top)]
    return top, version, cmds


def write_man(binary, outdir):
    top, version, cmds = collect(binary)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for old in outdir.glob("nnparity*.1"):
        old.unlink()
    for name, summary, parsed in cmds:
        (outdir / f"nnparity-{name}.1").write_text(
            man_page(f"nnparity-{name}", f"nnparity {name}", summary, version, parsed,
                     ["nnparity"]))
    desc = next((c for n, k, c in top["sections"] if n == "DESCRIPTION"), [])
    # "nnparity finds where ..." -> "finds where ..."
    summary = " ".join(desc[0]).rstrip(".") if desc else "compare a network with its port"
    summary = re.sub(r"^nnparity\s+", "", summary)
    # nnparity.1 last: the build's rule for all the pages names this one
    (outdir / "nnparity.1").write_text(
        man_page("nnparity", "nnparity", summary, version, top,
                 [f"nnparity-{n}" for n, _, _ in cmds]))


def write_completion(binary, out):
    top, _, cmds = collect(binary)
    names = [n for n, _, _ in cmds]
    top_opts = sorted({o for o, _ in options_of(top)} | {"--help", "--version"})
    lines = [
        "# bash completion for nnparity: its commands, and each command's options.",
        "# Generated from `nnparity --help` and `nnparity CMD --help` by scripts/gen_docs.py;",
        "# do not edit. Anything else completes as a file name.",
        "",
        "_nnparity() {",
        "    local cur prev cmd opts='' dirs=''",
        "    cur=${COMP_WORDS[COMP_CWORD]}",
        "    prev=${COMP_WORDS[COMP_CWORD-1]}",
        '    if [ "$COMP_CWORD" -eq 1 ]; then',
        f"        mapfile -t COMPREPLY < <(compgen -W '{' '.join(names + ['help'] + top_opts)}'"
        ' -- "$cur")',
        "        return",
        "    fi",
        "    cmd=${COMP_WORDS[1]}",
        "    case $cmd in",
        "        help)",
        '            if [ "$COMP_CWORD" -eq 2 ]; then',
        f"                mapfile -t COMPREPLY < <(compgen -W '{' '.join(names)}' -- \"$cur\")",
        "            fi",
        "            return ;;",
    ]
    for name, _, parsed in cmds:
        opts = options_of(parsed)
        words = list(dict.fromkeys([o for o, _ in opts] + ["-h", "--help"]))
        dirs = [o for o, a in opts if a and re.fullmatch(r"DIR\b.*", a)]
        case = f"        {name}) opts='{' '.join(words)}'"
        if dirs:
            case += f"; dirs='{' '.join(dirs)}'"
        lines.append(case + " ;;")
    lines += [
        "    esac",
        '    if [ -n "$dirs" ] && [[ " $dirs " == *" $prev "* ]]; then',
        '        mapfile -t COMPREPLY < <(compgen -d -- "$cur")',
        "        return",
        "    fi",
        '    if [[ $cur == -* ]]; then',
        '        mapfile -t COMPREPLY < <(compgen -W "$opts" -- "$cur")',
        "    fi",
        "}",
        "complete -o default -F _nnparity nnparity",
    ]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join(lines) + "\n")


def main(argv):
    if len(argv) != 4 or argv[1] not in ("man", "completion"):
        sys.exit("usage: gen_docs.py man BIN DIR | gen_docs.py completion BIN FILE")
    if argv[1] == "man":
        write_man(argv[2], argv[3])
    else:
        write_completion(argv[2], argv[3])


if __name__ == "__main__":
    main(sys.argv)
