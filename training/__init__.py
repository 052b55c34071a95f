"""wrenlm.training"""
