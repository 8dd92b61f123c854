"""The Gradio page, room by room: the filter bar (filters), the Search tab (search), the Explore tab
(explore), the JSON endpoints (endpoints), how answers look (present), the public link's guards (guards)
and its launch (launch). app.py assembles them."""
