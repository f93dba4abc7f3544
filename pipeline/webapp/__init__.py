"""The web app (`glide serve`): one FastAPI app; the labelling page first, the pairwise comparison page later.

    app.py           create_app(settings): routes, security headers, the static pages
    context.py       what the routes share: the labels store, the pairs index, the assignment policy
    sessions.py      sign-in by per-rater link (cookie), admin only where asked, CSRF checks on every POST
    label_routes.py  the labelling page's API: next item, answers, undo, progress, images by uid
    admin_routes.py  the admin page's API: overview (progress, agreement, gold accuracy), new queues, export
    server.py        bind, print the links, run uvicorn
    static/          the pages (HTML, one stylesheet, scripts that render untrusted text as text only)

The labelling logic itself (leases, gold, agreement) lives in filtering.labels; this package is the shell.
"""
