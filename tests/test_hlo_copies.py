"""``benchmarks.hlo_copies`` counts the copies that an HLO module text holds."""

from __future__ import annotations

import pytest

from advjax import train
from benchmarks import hlo_copies

# Hand-written: the body copies a 3x4 float32 and an int32 scalar, its nested
# loop one 2-vector, and a fusion's copy moves no buffer of its own.
HLO = """\
HloModule m

%fused (p: f32[3,4]) -> f32[3,4] {
  %p = f32[3,4]{1,0} parameter(0)
  ROOT %copy.9 = f32[3,4]{1,0} copy(%p)
}

%inner_body (t: (u32[2])) -> (u32[2]) {
  %t = (u32[2]) parameter(0)
  %g = u32[2]{0} get-tuple-element(%t), index=0
  %copy.5 = u32[2]{0} copy(%g)
  ROOT %r = (u32[2]) tuple(%copy.5)
}

%inner_cond (t: (u32[2])) -> pred[] {
  %t = (u32[2]) parameter(0)
  ROOT %c = pred[] constant(true)
}

%body (s: (f32[3,4], s32[])) -> (f32[3,4], s32[]) {
  %s = (f32[3,4], s32[]) parameter(0)
  %a = f32[3,4]{1,0} get-tuple-element(%s), index=0
  %copy.1 = f32[3,4]{1,0} copy(%a)
  %f = f32[3,4]{1,0} fusion(%copy.1), kind=kLoop, calls=%fused
  %i = s32[] get-tuple-element(%s), index=1
  %copy.2 = s32[] copy(%i)
  %k = u32[2]{0} constant({1, 2})
  %w = (u32[2]) while(%k), condition=%inner_cond, body=%inner_body
  ROOT %r = (f32[3,4], s32[]) tuple(%f, %copy.2)
}

%cond (s: (f32[3,4], s32[])) -> pred[] {
  %s = (f32[3,4], s32[]) parameter(0)
  ROOT %c = pred[] constant(true)
}

ENTRY %main (x: f32[3,4]) -> (f32[3,4], s32[]) {
  %x = f32[3,4]{1,0} parameter(0)
  %z = s32[] constant(0)
  %t = (f32[3,4], s32[]) tuple(%x, %z)
  ROOT %w = (f32[3,4], s32[]) while(%t), condition=%cond, body=%body, \
metadata={op_name="jit(train_epoch)/while"}
}
"""


def test_counts_the_body_its_nested_loops_and_the_module():
  body = hlo_copies.epoch_body(HLO)
  assert body == "body"
  copies = hlo_copies.count(HLO, body)
  assert copies == hlo_copies.Copies(ops=2, bytes=3 * 4 * 4 + 4, nested_ops=1, module_ops=3)
  assert hlo_copies.count(HLO, hlo_copies.entry(HLO)) == hlo_copies.Copies(0, 0, 3, 3)


SIZES = {"units": 4, "pieces": 2, "batch": 5}


@pytest.fixture(scope="module")
def tiny_epoch():
  """The optimised HLO of a tiny one-member compiled epoch of the paper's objective."""
  return hlo_copies.epoch_hlo(train.Adversarial(0.25), **SIZES, examples=20, members=1)


def test_finds_the_loop_of_a_compiled_epoch(tiny_epoch):
  copies = hlo_copies.count(tiny_epoch, hlo_copies.epoch_body(tiny_epoch))
  # The single member's carry is updated in place: no copy of its first
  # kernel (784 x 8 float32) in the loop body.
  assert copies.bytes < 784 * 8 * 4


def test_the_loop_body_runs_the_products_of_one_jitted_step(tiny_epoch):
  step = hlo_copies.step_hlo(train.Adversarial(0.25), **SIZES)
  # Three layers: two forward passes (3 products each; the attack's is the
  # clean term's), the attack's backward pass to the input (3), and one
  # backward pass to the parameters per term (3 weight gradients and 2 input
  # gradients each). Before the masks were drawn once a step, the loop body
  # ran a third forward pass: 22.
  assert hlo_copies.products(step, hlo_copies.entry(step)) == 2 * 3 + 3 + 2 * 5
  assert hlo_copies.products(tiny_epoch, hlo_copies.epoch_body(tiny_epoch)) == 2 * 3 + 3 + 2 * 5
