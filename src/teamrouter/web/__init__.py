"""Server-rendered pages: for now the two pages the links in emails open (links.py), self-contained
(templates/, static/; no script, nothing fetched from another origin) so a dashboard can restyle them."""
