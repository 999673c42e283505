"""transformers' ``Trainer`` for a model kernelized with ``sp_size > 1`` (data parallel x sequence parallel).

Every rank of an SP group must train on the same batch, and the group as a whole is one data-parallel replica:

- the training sampler shards the data over the SP groups (``report.dp_size`` of them), not over the processes, and
  accelerate's per-process sharding of the prepared loader passes through (as the Trainer does for its own
  rank-aware samplers);
- the token count the loss divides by is counted once per SP group, not once per rank (the Trainer gathers it over
  every process);
- the Trainer scales the loss by the process count to undo DDP's mean; under the SP contract the ranks of a group
  already hold ``sp_size`` times their share, so the scale is the number of SP groups.

Usage (``torchrun``, any backend)::

    report = sp_kernels.kernelize(model, sp_size=2)          # on 4 ranks: 2 SP groups of 2
    trainer = SequenceParallelTrainer(model=model, args=args, train_dataset=data,
                                      data_collator=DataCollatorWithFlattening())
    trainer.train()
"""
from __future__ import annotations

from transformers import Trainer

from sp_kernels.kernelize.sequence_parallel import sp_group


class SequenceParallelTrainer(Trainer):
    """A ``Trainer`` whose data parallelism is over SP groups (see the module's docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sp = sp_group(self.model)
        if self.sp.dp_rank is None:
            raise ValueError("model: kernelized with a bare process group, whose sibling SP groups are unknown; "
                             "kernelize with group=None (contiguous groups) or with the DeviceMesh")
        if self.args.world_size != self.sp.size * self.sp.dp_size:
            raise ValueError(f"model: its SP groups cover {self.sp.size * self.sp.dp_size} processes, the Trainer "
                             f"runs {self.args.world_size}")

    def _get_train_sampler(self, *args, **kwargs):
        from torch.utils.data import DistributedSampler

        dataset = args[0] if args else kwargs.get("train_dataset", self.train_dataset)
        return DistributedSampler(dataset, num_replicas=self.sp.dp_size, rank=self.sp.dp_rank, shuffle=True,
                                  seed=self.args.seed)

    def get_train_dataloader(self):
        from accelerate.data_loader import BatchSamplerShard

        loader = super().get_train_dataloader()
        shard = getattr(loader, "batch_sampler", None)
        if isinstance(shard, BatchSamplerShard):  # the sampler already gives each SP group its own batches
            shard.num_processes, shard.process_index = 1, 0
        return loader

    def _get_num_items_in_batch(self, batch_samples, device):
        count = super()._get_num_items_in_batch(batch_samples, device)
        if count is not None and self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = count / self.sp.size  # gathered over every process: each SP group's batch counted sp_size times
        return count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        if num_items_in_batch is not None and self.args.average_tokens_across_devices and \
                (self.model_accepts_loss_kwargs or self.compute_loss_func):
            # the Trainer scaled by the process count; the SP groups are the data-parallel replicas
            if return_outputs:
                return result[0] / self.sp.size, result[1]
            return result / self.sp.size
        return result
