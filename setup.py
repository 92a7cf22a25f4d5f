"""The optional native fast path (sbc/sip/_fast.c); the rest is pyproject.toml.

optional=True: without a C compiler and Python's headers the install goes on
and message.py runs its pure Python path.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("sbc.sip._fast", ["sbc/sip/_fast.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"])])
