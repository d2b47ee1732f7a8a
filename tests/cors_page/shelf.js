// What a web app on another origin does with imageshelf's JSON API: list, presign, upload straight
// to S3, then follow the new image until it is processed. Every step reports what the browser let
// it see; a step the browser refuses (CORS) rejects with a TypeError, reported as "refused: ...".
window.shelf = {
  async list(api) {
    const response = await fetch(`${api}/images?limit=5`);
    return { status: response.status, images: (await response.json()).images.length };
  },

  async upload(api, token) {
    const headers = { "Content-Type": "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    const asked = await fetch(`${api}/uploads`, {
      method: "POST",
      headers,
      body: JSON.stringify({ filename: "from another origin.png", content_type: "image/png" }),
    });
    const grant = await asked.json();
    const result = { grant: asked.status, location: asked.headers.get("Location"), id: grant.id };
    if (asked.status !== 201) return Object.assign(result, { error: grant.error });

    const canvas = document.createElement("canvas");
    canvas.width = 96;
    canvas.height = 64;
    const context = canvas.getContext("2d");
    context.fillStyle = "#3a7";
    context.fillRect(0, 0, 96, 64);
    const png = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    const form = new FormData();
    for (const [name, value] of Object.entries(grant.fields)) form.append(name, value);
    form.append("file", png, "from another origin.png");
    result.sent = (await fetch(grant.url, { method: "POST", body: form })).status;

    for (let i = 0; i < 100; i += 1) {
      const image = await (await fetch(`${api}/images/${grant.id}`)).json();
      if (image.status !== "pending") {
        result.status = image.status;
        result.size = [image.original.width, image.original.height];
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    return result;
  },

  async attempt(step) {
    try {
      return await step();
    } catch (error) {
      return `refused: ${error.name}`;
    }
  },
};
