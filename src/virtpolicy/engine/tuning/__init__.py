"""Enforcement of the stored policies: reconcile passes and where the placer
puts each guest.
"""
