"""Where each planning rule comes from, quoted once so every rule that uses a source cites it the same way."""

from __future__ import annotations

SEED = "SEED_NOTES: practitioner write-up"
RAG_SRC = (
    "Lewis et al. 2020 (RAG); Ovadia et al. 2024 'Fine-Tuning or Retrieval?' (RAG beats fine-tuning for new facts)"
)
ICL_SRC = "Brown et al. 2020 (GPT-3: in-context learning)"
LIMA_SRC = "Zhou et al. 2023 (LIMA: ~1k examples teach format and style)"
GEKHMAN_SRC = "Gekhman et al. 2024 (fine-tuning on new facts is slow and raises hallucination)"
DAPT_SRC = "Gururangan et al. 2020 'Don't Stop Pretraining' (2-8B tokens of domain text per domain)"
SCRATCH_SRC = "Wu et al. 2023 (BloombergGPT: 363B finance + 345B general tokens, ~1.3M A100-hours); " + SEED
CHINCHILLA_SRC = "Hoffmann et al. 2022 (Chinchilla: ~20 tokens per parameter)"
REPLAY_SRC = "Ibrahim et al. 2024 (5% replay for weak shift to 25% for strong, with LR re-warm/re-decay)"
DCPT_SRC = "D-CPT Law (Que et al. 2024)"
CHATHOME_SRC = "ChatHome (Wen et al. 2023): domain:general 1:5 best in CPT; " + SEED
LORA_SRC = "Hu et al. 2021 (LoRA); Biderman et al. 2024 'LoRA Learns Less and Forgets Less'"
ZERO_SRC = "Rajbhandari et al. 2020 (ZeRO); Ren et al. 2021 (ZeRO-Offload); " + SEED
BF16_SRC = SEED + " (bf16 converges more reliably than fp16); Kalamkar et al. 2019 (bf16 training)"
