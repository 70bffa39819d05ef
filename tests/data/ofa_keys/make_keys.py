"""Write the official OFA state-dict key lists (key -> shape) for the five published sizes.

Independent of ofa_ext's model code: the keys are spelled out from specs/ofa.md §9 (patterns) and
§2.1 (sizes), with the run-script flags (§12). Checks, run by tests/test_ofa_keys.py:
  * `official_keys(custom_small)` equals shared/ofa_reference/checkpoint_spec.json key by key, in order;
  * the unique parameter counts equal §2.1 (33,488,336 … 929,486,848).

    python tests/data/ofa_keys/make_keys.py      # rewrites the JSON files beside this script
"""

import json
import os

V = 59457  # OFA dictionary size
SIZES = {  # C, F, enc layers, dec layers, heads, resnet depths
    "ofa_tiny": (256, 1024, 4, 4, 4, (3, 4, 6)),
    "ofa_medium": (512, 2048, 4, 4, 8, (3, 4, 23)),
    "ofa_base": (768, 3072, 6, 6, 12, (3, 4, 23)),
    "ofa_large": (1024, 4096, 12, 12, 16, (3, 8, 36)),
    "ofa_huge": (1280, 5120, 24, 12, 16, (3, 8, 36)),
}
BUFFER_LEAVES = ("version", "token_rp_bucket", "image_rp_bucket", "image_position_idx",
                 "running_mean", "running_var", "num_batches_tracked")
TIED_COPIES = ("decoder.embed_tokens.weight", "decoder.output_projection.weight")


def official_keys(C, F, n_enc, n_dec, H, depths, vocab=V, flags=True):
    keys = []

    def add(k, shape):
        keys.append((k, list(shape)))

    def ln(p, d):
        add(p + ".weight", [d]); add(p + ".bias", [d])

    def lin(p, o, i):
        add(p + ".weight", [o, i]); add(p + ".bias", [o])

    def bn(p, c):
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            add(f"{p}.{leaf}", [c])
        add(p + ".num_batches_tracked", [])

    def attn(p):
        if flags:
            add(p + ".c_attn", [H])
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            lin(f"{p}.{proj}", C, C)

    add("encoder.version", [1]); add("encoder.token_rp_bucket", [1024, 1024]); add("encoder.image_rp_bucket", [1765, 1765])
    add("encoder.embed_tokens.weight", [vocab, C]); ln("encoder.layernorm_embedding", C)
    add("encoder.type_embedding.weight", [2, C])
    r = "encoder.embed_images"
    add(r + ".conv1.weight", [64, 3, 7, 7]); bn(r + ".bn1", 64)
    inplanes = 64
    for s, (planes, n) in enumerate(zip((64, 128, 256), depths)):
        for b in range(n):
            p = f"{r}.layer{s + 1}.{b}"
            add(p + ".conv1.weight", [planes, inplanes, 1, 1]); bn(p + ".bn1", planes)
            add(p + ".conv2.weight", [planes, planes, 3, 3]); bn(p + ".bn2", planes)
            add(p + ".conv3.weight", [4 * planes, planes, 1, 1]); bn(p + ".bn3", 4 * planes)
            if b == 0:
                add(p + ".downsample.0.weight", [4 * planes, inplanes, 1, 1]); bn(p + ".downsample.1", 4 * planes)
            inplanes = 4 * planes
    lin("encoder.image_proj", C, 1024); ln("encoder.patch_layernorm_embedding", C)
    add("encoder.embed_positions.weight", [1026, C]); add("encoder.embed_image_positions.weight", [1765, C])
    ln("encoder.pos_ln", C); ln("encoder.image_pos_ln", C)
    lin("encoder.pos_q_linear", C, C); lin("encoder.pos_k_linear", C, C)
    for l in range(n_enc):
        p = f"encoder.layers.{l}"
        attn(p + ".self_attn"); ln(p + ".self_attn_layer_norm", C)
        lin(p + ".fc1", F, C); lin(p + ".fc2", C, F)
        if flags:
            ln(p + ".attn_ln", C); ln(p + ".ffn_layernorm", F)
        ln(p + ".final_layer_norm", C)
    ln("encoder.layer_norm", C)
    for l in range(n_enc):
        add(f"encoder.token_rel_pos_table_list.{l}.weight", [511, H])
    for l in range(n_enc):
        add(f"encoder.image_rel_pos_table_list.{l}.weight", [6892, H])

    add("decoder.version", [1]); add("decoder.token_rp_bucket", [1024, 1024]); add("decoder.image_rp_bucket", [1765, 1765])
    add("decoder.image_position_idx", [1026])
    add("decoder.embed_tokens.weight", [vocab, C]); ln("decoder.layernorm_embedding", C)
    add("decoder.embed_positions.weight", [1026, C]); add("decoder.embed_image_positions.weight", [1765, C])
    ln("decoder.pos_ln", C); ln("decoder.image_pos_ln", C)
    for n in ("self_pos_q_linear", "self_pos_k_linear", "cross_pos_q_linear", "cross_pos_k_linear"):
        lin("decoder." + n, C, C)
    ln("decoder.code_layernorm_embedding", C)
    for l in range(n_dec):
        p = f"decoder.layers.{l}"
        attn(p + ".self_attn")
        if flags:
            ln(p + ".self_attn_ln", C); ln(p + ".cross_attn_ln", C)
        ln(p + ".self_attn_layer_norm", C)
        attn(p + ".encoder_attn"); ln(p + ".encoder_attn_layer_norm", C)
        if flags:
            ln(p + ".ffn_layernorm", F)
        lin(p + ".fc1", F, C); lin(p + ".fc2", C, F); ln(p + ".final_layer_norm", C)
    ln("decoder.layer_norm", C)
    add("decoder.output_projection.weight", [vocab, C])
    for l in range(n_dec):
        add(f"decoder.token_rel_pos_table_list.{l}.weight", [511, H])
    for l in range(n_dec):
        add(f"decoder.image_rel_pos_table_list.{l}.weight", [6892, H])
    return keys


def unique_params(keys):
    """Parameters, tied embedding counted once, buffers excluded."""
    total = 0
    for k, shape in keys:
        if k.rsplit(".", 1)[-1] in BUFFER_LEAVES or k in TIED_COPIES:
            continue
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    for arch, size in SIZES.items():
        keys = official_keys(*size)
        doc = {"arch": arch, "flags": "script", "params": unique_params(keys), "num_keys": len(keys),
               "keys": {k: s for k, s in keys}}
        with open(os.path.join(here, f"{arch}.json"), "w") as f:
            json.dump(doc, f, separators=(",", ":"))
        print(arch, doc["params"], doc["num_keys"])


if __name__ == "__main__":
    main()
