"""Sampling: DDPM/DDIM loops, classifier-free and CLIP guidance, inpainting, SDEdit, upsampling.

samplers.py      the loops (sample_loop, sample_loop_progressive, ddim_encode)
guidance.py      text encoding once per run; classifier-free guidance in one batched forward
clip_guidance.py cond_fn from any differentiable score of x_t (the samplers take any cond_fn)
clip_cond.py     the noised CLIP's cond_fn builder (training.nn.noised_clip; CLIP engineer's)
editing.py       inpainting ("finetuned" / "replace") and SDEdit
upsample.py      the fast27 upsampling stage with temperature
text2im.py       prompts -> images, what the CLI and evaluation call
images.py        image files <-> tensors, grids
"""
