#!/usr/bin/env python3
"""Fails on a broken internal link of the guide: a link from one page of book/src to a page
that does not exist, or to a heading the page does not have. External links are not fetched.

Usage: python3 .ci/check-links.py [book/src]
"""
import re
import sys
from pathlib import Path

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def strip_code(text):
    """The page without fenced code blocks and inline code spans."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else re.sub(r"`[^`]*`", "", line))
    return out


def slug(heading):
    """mdBook's anchor for a heading: lower case, markup and punctuation dropped, spaces as -."""
    text = re.sub(r"<[^>]+>", "", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.replace("`", "").strip().lower()
    return "".join(c if c.isalnum() or c in "-_" else "-" if c == " " else "" for c in text)


def anchors(path):
    found = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            found.add(slug(m.group(2)))
    return found


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "book/src")
    broken = []
    pages = sorted(root.rglob("*.md"))
    for page in pages:
        for number, line in enumerate(strip_code(page.read_text(encoding="utf-8")), 1):
            for target in LINK.findall(line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                    continue
                file_part, _, anchor = target.partition("#")
                dest = (page.parent / file_part).resolve() if file_part else page.resolve()
                if file_part and dest.suffix == ".html":
                    dest = dest.with_suffix(".md")
                if not dest.exists():
                    broken.append(f"{page}:{number}: `{target}`: no such page")
                elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                    broken.append(f"{page}:{number}: `{target}`: no heading `#{anchor}` there")
    for b in broken:
        print(b)
    print(f"{len(pages)} pages, {len(broken)} broken internal link(s)")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
