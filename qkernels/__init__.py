"""qkernels"""
