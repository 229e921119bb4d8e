"""Response bodies in Ollama's documented wire format (docs/api.md of ollama/ollama):
``/api/chat`` answers, NDJSON streams, ``/api/embed`` and ``/api/tags``. No Ollama server
can run on the machines this suite runs on, so these recorded bodies stand in for one."""

from __future__ import annotations

import json
from typing import Any

MODEL = "llama3.2"
T = "2025-04-11T18:18:52.293545Z"


def line(data: dict[str, Any]) -> str:
    return json.dumps(data) + "\n"


CHAT = {
    "model": MODEL,
    "created_at": T,
    "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
    "done_reason": "stop",
    "done": True,
    "total_duration": 5191566416,
    "load_duration": 2154458,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 383809000,
    "eval_count": 10,
    "eval_duration": 4799921000,
}

CHAT_STREAM = "".join(
    [
        *(
            line({"model": MODEL, "created_at": T, "message": {"role": "assistant", "content": piece}, "done": False})
            for piece in ["Hello", "!", " How", " can", " I", " help", " you", " today", "?"]
        ),
        line(
            {
                "model": MODEL,
                "created_at": T,
                "message": {"role": "assistant", "content": ""},
                "done_reason": "stop",
                "done": True,
                "total_duration": 4883583458,
                "prompt_eval_count": 26,
                "eval_count": 10,
            }
        ),
    ]
)

TOOL_CALL = {
    "model": MODEL,
    "created_at": T,
    "message": {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}},
            {"function": {"name": "get_time", "arguments": {"zone": "Europe/Paris"}}},
        ],
    },
    "done_reason": "stop",
    "done": True,
    "prompt_eval_count": 155,
    "eval_count": 81,
}

TOOL_CALL_STREAM = line({"model": MODEL, "created_at": T, "message": TOOL_CALL["message"], "done": False}) + line(
    {
        "model": MODEL,
        "created_at": T,
        "message": {"role": "assistant", "content": ""},
        "done_reason": "stop",
        "done": True,
        "prompt_eval_count": 155,
        "eval_count": 81,
    }
)

ERROR_MID_STREAM = (
    line({"model": MODEL, "created_at": T, "message": {"role": "assistant", "content": "Once"}, "done": False})
    + line({"model": MODEL, "created_at": T, "message": {"role": "assistant", "content": " upon"}, "done": False})
    + line({"error": "an error was encountered while running the model: unexpected EOF"})
)

CUT_STREAM = line({"model": MODEL, "created_at": T, "message": {"role": "assistant", "content": "Once"}, "done": False})

EMBED = {
    "model": "all-minilm",
    "embeddings": [[0.010071029, -0.0017594862, 0.05007221], [-0.0098027075, 0.06042469, 0.025257962]],
    "total_duration": 14143917,
    "load_duration": 1019500,
    "prompt_eval_count": 8,
}

TAGS = {
    "models": [
        {
            "name": "llama3.2:latest",
            "model": "llama3.2:latest",
            "modified_at": "2025-05-04T17:37:44.706015396-07:00",
            "size": 2019393189,
            "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
            "details": {"format": "gguf", "family": "llama", "parameter_size": "3.2B", "quantization_level": "Q4_K_M"},
        },
        {
            "name": "deepseek-r1:latest",
            "model": "deepseek-r1:latest",
            "modified_at": "2025-05-10T08:06:48.639712648-07:00",
            "size": 4683075271,
            "digest": "0a8c266910232fd3291e71e5ba1e058cc5af9d411192cf88b6d30e92b6e73163",
            "details": {"format": "gguf", "family": "qwen2", "parameter_size": "7.6B", "quantization_level": "Q4_K_M"},
        },
    ]
}

MODEL_NOT_FOUND = {"error": "model 'nope' not found, try pulling it first"}
CONTEXT_TOO_LONG = {"error": "the input length exceeds the context length"}
