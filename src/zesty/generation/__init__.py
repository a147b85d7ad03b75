"""Text generation: scheduler, KV cache, sampling, detokenization, runner and engine.

Data flow per step: `Engine` (asyncio) -> `Scheduler.schedule()` (pure bookkeeping) ->
`TorchRunner.step()` (one forward over every scheduled chunk, against the preallocated
`KVCache`) -> `Sampler.sample()` (vectorized) -> `Scheduler.update_from_output()` ->
`Detokenizer` + stop sequences -> events to each request's stream.
"""
