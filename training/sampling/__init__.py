"""Sampling: DDPM/DDIM loops, classifier-free and CLIP guidance, inpainting, SDEdit, upsampling.

samplers.py      the loops (sample_loop, sample_loop_progressive, ddim_encode)
guidance.py      text encoding once per run; classifier-free guidance in one batched forward
clip_cond.py     CLIP guidance: the noised CLIP's cond_fn (training.nn.noised_clip); samplers take any cond_fn
editing.py       inpainting ("finetuned" / "replace") and SDEdit
upsample.py      the fast27 upsampling stage with temperature
text2im.py       prompts -> images with the base model alone
session.py       models loaded once; text -> image (+ upsampling), inpainting, SDEdit: what the CLI
                 and evaluation call
images.py        image files <-> tensors, grids
"""
