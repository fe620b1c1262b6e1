#!/bin/bash
# mvseg on a SLURM cluster: Lightning's DDP with SLURMEnvironment (no launcher of our own).
#   sbatch experiments/cluster/slurm.sh experiments/arseg.yaml runs/arseg_slurm [extra mvseg fit args]
#
# Knobs: --nodes and --gres/--ntasks-per-node (one task per GPU; Lightning reads the world size
# from SLURM, and --trainer.num_nodes / --trainer.devices below must agree with them).
# Pre-emption: SLURM sends SIGUSR1 90 s before the time limit; Lightning saves
# RUN/hpc_ckpt_N.ckpt and re-queues the job (scontrol requeue). The re-queued job runs this
# same script: `--ckpt_path last` resumes from the newest of RUN/hpc_ckpt_N.ckpt and
# RUN/checkpoints/last.ckpt (mvseg's rule; from scratch if there is neither), in the same run
# directory (its config.yaml is overwritten, no error).
#SBATCH --job-name=mvseg
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=SIGUSR1@90
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%j.out

set -euo pipefail
CONFIG=${1:?usage: sbatch slurm.sh CONFIG.yaml RUN_DIR [mvseg fit args]}
RUN=${2:?usage: sbatch slurm.sh CONFIG.yaml RUN_DIR [mvseg fit args]}
shift 2

srun mvseg fit --config "$CONFIG" \
    --trainer.accelerator gpu --trainer.strategy ddp \
    --trainer.num_nodes "$SLURM_JOB_NUM_NODES" --trainer.devices "$SLURM_NTASKS_PER_NODE" \
    --trainer.default_root_dir "$RUN" --trainer.logger.init_args.save_dir "$RUN" \
    --ckpt_path last "$@"
