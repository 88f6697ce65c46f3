"""Analysis and visualisation: Grad-CAM, attention strips, complexity counting, checkpoint ensembles."""
