# π-Tuning's released recipe (TencentARC/pi-Tuning run_scripts, specs/pi_tuning.md §4, §6.3), the
# defaults of every π-Tuning script here; sourced after a script has set what is its own (batch
# size, seed, epochs). Each value can be overridden from the environment, e.g. MAX_EPOCH=2.
: "${ARCH:=ofa_large}"
: "${RESTORE=checkpoints/ofa_large.pt}"
: "${LR:=1e-4}"
: "${MAX_EPOCH:=100}"
: "${TOTAL_BATCH:=1024}"          # global batch: 8 GPUs x batch x update-freq
: "${PATCH_IMAGE_SIZE:=480}"
: "${DROP_PATH:=0.2}"
: "${FREEZE_RESNET:=1}"           # ours: BatchNorm statistics cannot drift, so a piece file describes its expert; 0 = π-Tuning
export ARCH RESTORE LR MAX_EPOCH TOTAL_BATCH PATCH_IMAGE_SIZE DROP_PATH FREEZE_RESNET
