"""Check the built docs site: every internal link and `#anchor` resolves, every image is there.

    python tools/check_site.py [_docs] [--site-url https://secondsight.github.io/secondsight/]

Reads every `*.html` page under the site folder (`_docs/` by default, tutorials/ included). A link is internal when
it is relative (`viz.html`, `../data.html#read_image`, `#same-page`) or starts with the site's own URL (nbdev
writes symbol links as absolute `site-url/module.html#symbol` links). For each internal link the target file must
exist and, when the link has a `#fragment`, the target page must hold an element with that `id`. Every `<img src>`
and every local stylesheet/script must exist. The site URL is read from the site's `sitemap.xml` unless given.
Prints every problem with its page and exits 1 when there is any; external links are not fetched."""
import re, sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

EXTERNAL = re.compile(r'^[a-zA-Z][a-zA-Z0-9+.-]*:|^//')  # http:, https:, mailto:, data:, javascript:, //host

class _Page(HTMLParser):
    "Collects the `id`s of a page and its links: `(tag, attribute, url)`."
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids, self.links = set(), []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get('id'): self.ids.add(a['id'])
        if tag == 'a' and a.get('name'): self.ids.add(a['name'])
        if tag == 'a' and a.get('href') is not None: self.links.append(('a', 'href', a['href']))
        elif tag == 'link' and a.get('href') and 'stylesheet' in (a.get('rel') or ''): self.links.append((tag, 'href', a['href']))
        elif tag in ('img', 'script') and a.get('src') is not None: self.links.append((tag, 'src', a['src']))
    handle_startendtag = handle_starttag

def parse(path:Path)->_Page:
    p = _Page(); p.feed(path.read_text(errors='replace')); p.close()
    return p

def site_url_of(site:Path)->str|None:
    "The site's own URL, from the `<loc>` of its top `index.html` in `sitemap.xml`; None without a sitemap."
    sm = site/'sitemap.xml'
    if not sm.exists(): return None
    tops = [l for l in re.findall(r'<loc>\s*([^<\s]+)\s*</loc>', sm.read_text()) if l.endswith('/index.html')]
    if tops: return min(tops, key=len)[:-len('index.html')]
    return None

def check_site(site, site_url:str|None=None)->list:
    "Problems found in the built site under `site`, as `page: message` lines (empty when all is well)."
    site = Path(site).resolve()
    if site_url is None: site_url = site_url_of(site)
    if site_url and not site_url.endswith('/'): site_url += '/'
    pages = sorted(p for p in site.rglob('*.html') if 'site_libs' not in p.parts)
    if not pages: return [f'{site}: no HTML pages (was the site built?)']
    parsed, problems = {}, []
    def page(p:Path):
        if p not in parsed: parsed[p] = parse(p)
        return parsed[p]
    for p in pages:
        rel = p.relative_to(site).as_posix()
        for tag, attr, url in page(p).links:
            url = url.strip()
            if site_url and url.startswith(site_url): target_rel = url[len(site_url):]; base = site
            elif url.startswith('#'): target_rel = url; base = None
            elif EXTERNAL.match(url) or url == '': continue
            else: target_rel = url; base = p.parent
            parts = urlsplit(target_rel)
            if base is None: target = p
            else:
                target = (base/unquote(parts.path)).resolve() if parts.path else p
                if target.is_dir(): target = target/'index.html'
            what = f'<{tag} {attr}="{url}">'
            if base is not None and site not in target.parents and target != site:
                problems.append(f'{rel}: {what} points outside the site'); continue
            if not target.is_file():
                problems.append(f'{rel}: {what}: {target.relative_to(site).as_posix()} does not exist'); continue
            frag = unquote(parts.fragment)
            if tag == 'a' and frag and target.suffix == '.html' and frag not in page(target).ids:
                problems.append(f'{rel}: {what}: no id "{frag}" in {target.relative_to(site).as_posix()}')
    return problems

def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    site_url = None
    if '--site-url' in args:
        i = args.index('--site-url'); site_url = args[i+1]; del args[i:i+2]
    site = Path(args[0] if args else '_docs')
    problems = check_site(site, site_url)
    for line in problems: print(line)
    n = len(list(site.rglob('*.html')))
    print(f'check_site: {n} pages under {site}, {len(problems)} problem(s)' + ('' if problems else ': all internal links, anchors and images resolve'))
    return 1 if problems else 0

if __name__ == '__main__': sys.exit(main())
