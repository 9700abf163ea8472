"""OpenAI's Responses API (and its Conversations API) over the chat pipeline: the wire
format, written once (items.py in both directions, objects.py, stream.py), the state
(store.py) and the operations (service.py)."""
