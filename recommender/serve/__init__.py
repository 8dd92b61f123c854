"""The query path: `recommender` (the Python API), `index` (exact filtered top-k), `ranking`,
`service` (what the app and its API do), `ui` (Gradio adapters), `url_fetch`, `startup`."""
